// NumPy .npy files of float32 arrays: what `flowrt attributes build` writes and `flowrt
// manipulate` reads, interchangeable with numpy.save / numpy.load.
//
// The writer produces format version 1.0: the magic "\x93NUMPY", version bytes 1 0, a
// little-endian uint16 header length, then the header, a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (R, C), } padded with spaces and ended by
// '\n' so that the data starts at a multiple of 64 bytes, then the values in C order.
//
// The reader treats the file as untrusted. It accepts versions 1.0, 2.0 and 3.0 (uint32 header
// length), a header of at most kMaxNpyHeader bytes holding exactly the keys descr,
// fortran_order and shape, descr '<f4' (little-endian float32), fortran_order False, and exactly
// as many bytes of data as the shape announces; every size is checked before anything is
// allocated. Anything else is an Error(FLOWRT_INVALID_ARGUMENT) naming the file and what is
// wrong (a file that cannot be opened: FLOWRT_IO_ERROR).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace flowrt {

// numpy.load refuses headers over 10000 bytes by default; so does this reader.
constexpr size_t kMaxNpyHeader = 10000;

struct NpyArray {
  std::vector<int64_t> shape;  // C order; empty for a scalar
  std::vector<float> data;     // product(shape) values
};

// The bytes of a .npy file holding `data` (product(shape) floats, C order).
std::vector<uint8_t> encode_npy_f32(const float *data, const std::vector<int64_t> &shape);
// Writes them atomically (a temporary file, synced and renamed).
void write_npy_f32(const std::string &path, const float *data, const std::vector<int64_t> &shape);

// Parses .npy bytes; `name` is what error messages call them.
NpyArray decode_npy_f32(const uint8_t *bytes, size_t size, const std::string &name);
// Reads a .npy file (at most 4 GiB).
NpyArray read_npy_f32(const std::string &path);

}  // namespace flowrt
