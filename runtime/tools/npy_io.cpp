#include "npy_io.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace flowrt {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// No dimension may exceed this, and neither may the element count: 2^40 floats is 4 TiB, far
// beyond the 4 GiB a file may hold, and small enough that products of two cannot overflow.
constexpr uint64_t kMaxElements = uint64_t{1} << 40;

[[noreturn]] void bad(const std::string &name, const std::string &what) {
  invalid_argument("'" + name + "': " + what);
}

std::string shape_text(const std::vector<int64_t> &shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// A Python literal of the few kinds a .npy header holds: a quoted string, True/False, a tuple of
// non-negative integers. `text` is the header, which the reader has bounded.
class HeaderParser {
 public:
  HeaderParser(const std::string &text, const std::string &name) : s_(text), name_(name) {}

  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const char *where) {
    if (!eat(c)) fail_here(std::string("expected '") + c + "' " + where);
  }
  bool at_end() {
    skip_space();
    return pos_ == s_.size();
  }
  std::string string_literal() {
    skip_space();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"'))
      fail_here("expected a quoted string");
    const char quote = s_[pos_++];
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\') fail_here("escape sequences are not supported in the header");
      out += s_[pos_++];
    }
    if (pos_ >= s_.size()) fail_here("unterminated string");
    ++pos_;
    return out;
  }
  bool boolean() {
    skip_space();
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail_here("expected True or False");
  }
  std::vector<int64_t> int_tuple() {
    expect('(', "to open the shape tuple");
    std::vector<int64_t> dims;
    while (!eat(')')) {
      if (!dims.empty()) {
        // "(3, 4)" or "(3, 4,)": a comma between and optionally after the elements.
        if (!eat(',')) fail_here("expected ',' or ')' in the shape tuple");
        if (eat(')')) break;
      }
      skip_space();
      uint64_t v = 0;
      size_t digits = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        v = v * 10 + static_cast<uint64_t>(s_[pos_++] - '0');
        if (++digits > 13 || v > kMaxElements)
          bad(name_, "shape dimension is absurdly large (over 2^40)");
      }
      if (digits == 0) fail_here("expected a non-negative integer in the shape tuple");
      if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 long literal
      if (dims.size() >= 32) bad(name_, "shape has more than 32 dimensions");
      dims.push_back(static_cast<int64_t>(v));
    }
    // Python writes a one-element tuple "(5,)"; "(5)" is an integer, not a tuple.
    return dims;
  }
  [[noreturn]] void fail_here(const std::string &what) {
    bad(name_, "malformed .npy header at byte " + std::to_string(pos_) + ": " + what);
  }

 private:
  const std::string &s_;
  const std::string &name_;
  size_t pos_ = 0;
};

uint64_t element_count(const std::vector<int64_t> &shape, const std::string &name) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    const uint64_t u = static_cast<uint64_t>(d);
    if (u != 0 && n > kMaxElements / u)  // checked before the product, which cannot overflow
      bad(name, "shape " + shape_text(shape) + " holds over 2^40 values");
    n *= u;
  }
  return n;
}

}  // namespace

std::vector<uint8_t> encode_npy_f32(const float *data, const std::vector<int64_t> &shape) {
  for (int64_t d : shape)
    if (d < 0) invalid_argument("npy: negative dimension in shape " + shape_text(shape));
  const uint64_t n = element_count(shape, "npy");
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
  const size_t unpadded = kMagicSize + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) invalid_argument("npy: shape too long for a version 1.0 header");
  // Sized once and filled in place (GCC 12 misreads a vector grown byte by byte as overflowing).
  const size_t head = kMagicSize + 4 + header.size();
  std::vector<uint8_t> out(head + static_cast<size_t>(n) * 4);
  std::memcpy(out.data(), kMagic, kMagicSize);
  out[6] = 1;
  out[7] = 0;
  out[8] = static_cast<uint8_t>(header.size() & 0xff);
  out[9] = static_cast<uint8_t>(header.size() >> 8);
  std::memcpy(out.data() + 10, header.data(), header.size());
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &data[i], 4);
    for (int b = 0; b < 4; ++b) out[head + 4 * i + b] = static_cast<uint8_t>(bits >> (8 * b));
  }
  return out;
}

void write_npy_f32(const std::string &path, const float *data, const std::vector<int64_t> &shape) {
  const std::vector<uint8_t> bytes = encode_npy_f32(data, shape);
  atomic_write_file(path, bytes.data(), bytes.size());
}

NpyArray decode_npy_f32(const uint8_t *bytes, size_t size, const std::string &name) {
  if (size < kMagicSize + 2 || std::memcmp(bytes, kMagic, kMagicSize) != 0)
    bad(name, "not a .npy file (it does not start with \\x93NUMPY)");
  const int major = bytes[6], minor = bytes[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    bad(name, ".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                  " is not supported (1.0, 2.0 and 3.0 are)");
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (size < kMagicSize + 2 + len_bytes) bad(name, "truncated .npy header");
  uint64_t header_len = 0;
  for (size_t b = 0; b < len_bytes; ++b)
    header_len |= static_cast<uint64_t>(bytes[kMagicSize + 2 + b]) << (8 * b);
  if (header_len > kMaxNpyHeader)
    bad(name, ".npy header of " + std::to_string(header_len) +
                  " bytes is absurdly large (at most " + std::to_string(kMaxNpyHeader) +
                  " accepted)");
  const size_t data_start = kMagicSize + 2 + len_bytes + static_cast<size_t>(header_len);
  if (size < data_start)
    bad(name, "truncated: the header announces " + std::to_string(header_len) +
                  " bytes, the file ends first");
  const std::string header(reinterpret_cast<const char *>(bytes) + kMagicSize + 2 + len_bytes,
                           static_cast<size_t>(header_len));
  for (unsigned char ch : header)
    if (ch == 0 || ch > 127) bad(name, "the .npy header is not ASCII text");

  HeaderParser p(header, name);
  p.expect('{', "at the start of the header dict");
  bool have_descr = false, have_order = false, have_shape = false;
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
  for (int entries = 0; !p.eat('}'); ++entries) {
    if (entries > 0) {
      if (!p.eat(',')) p.fail_here("expected ',' or '}' in the header dict");
      if (p.eat('}')) break;  // a trailing comma
    }
    const std::string key = p.string_literal();
    p.expect(':', "after a key");
    if (key == "descr") {
      if (have_descr) bad(name, "the .npy header repeats 'descr'");
      descr = p.string_literal();
      have_descr = true;
    } else if (key == "fortran_order") {
      if (have_order) bad(name, "the .npy header repeats 'fortran_order'");
      fortran = p.boolean();
      have_order = true;
    } else if (key == "shape") {
      if (have_shape) bad(name, "the .npy header repeats 'shape'");
      shape = p.int_tuple();
      have_shape = true;
    } else {
      bad(name, "unexpected key '" + key + "' in the .npy header");
    }
  }
  if (!p.at_end()) p.fail_here("unexpected text after the header dict");
  if (!have_descr || !have_order || !have_shape)
    bad(name, std::string("the .npy header lacks '") +
                  (!have_descr   ? "descr"
                   : !have_order ? "fortran_order"
                                 : "shape") +
                  "'");
  if (descr != "<f4") {
    std::string hint;
    if (descr == ">f4") hint = " (big-endian: convert with a.astype('<f4'))";
    if (descr == "<f8") hint = " (float64: convert with a.astype(np.float32))";
    bad(name, "dtype '" + descr + "' is not supported: float32 ('<f4') is needed" + hint);
  }
  if (fortran && shape.size() > 1)
    bad(name,
        "Fortran-order (column-major) arrays are not supported: save with "
        "np.ascontiguousarray(a)");
  const uint64_t n = element_count(shape, name);
  const uint64_t have = size - data_start;
  if (have != n * 4)
    bad(name, std::string(have < n * 4 ? "truncated" : "trailing bytes") + ": shape " +
                  shape_text(shape) + " needs " + std::to_string(n * 4) + " bytes of data, " +
                  "the file holds " + std::to_string(have));
  NpyArray out;
  out.shape = shape;
  out.data.resize(static_cast<size_t>(n));
  const uint8_t *src = bytes + data_start;
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(src[4 * i]) | (uint32_t(src[4 * i + 1]) << 8) |
                          (uint32_t(src[4 * i + 2]) << 16) | (uint32_t(src[4 * i + 3]) << 24);
    std::memcpy(&out.data[i], &bits, 4);
  }
  return out;
}

NpyArray read_npy_f32(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(FLOWRT_IO_ERROR, "'" + path + "': cannot open");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) fail(FLOWRT_IO_ERROR, "'" + path + "': cannot read");
  if (size > (std::streamoff{1} << 32)) bad(path, "file is larger than 4 GiB");
  f.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !f.read(reinterpret_cast<char *>(bytes.data()), size))
    fail(FLOWRT_IO_ERROR, "'" + path + "': cannot read");
  return decode_npy_f32(bytes.data(), bytes.size(), path);
}

}  // namespace flowrt
