#include "trainer/train/checkpoint.hpp"

#include <dirent.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace flowrt::train {
namespace {

constexpr char kMagic[16] = "FLOWTRAIN-CKPT1";

class Writer {
 public:
  void raw(const void *p, size_t n) {
    const auto *b = static_cast<const uint8_t *>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  void u64(uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    raw(b, 8);
  }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f64(double v) {
    uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }
  void str(const std::string &s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void floats(const std::vector<float> &v) {
    u64(v.size());
    for (float f : v) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(u >> (8 * i)));
    }
  }
  std::vector<uint8_t> bytes;
};

class Reader {
 public:
  Reader(const std::string &path, const uint8_t *p, size_t n) : path_(path), p_(p), n_(n) {}
  uint64_t u64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 8;
    return v;
  }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  double f64() {
    const uint64_t u = u64();
    double d;
    std::memcpy(&d, &u, 8);
    return d;
  }
  std::string str() {
    const uint64_t n = u64();
    need(n);
    std::string s(reinterpret_cast<const char *>(p_ + pos_), n);
    pos_ += n;
    return s;
  }
  std::vector<float> floats() {
    const uint64_t n = u64();
    if (n > (n_ - pos_) / 4) bad("a float array runs past the end");
    std::vector<float> v(n);
    for (uint64_t k = 0; k < n; ++k) {
      uint32_t u = 0;
      for (int i = 0; i < 4; ++i) u |= static_cast<uint32_t>(p_[pos_ + 4 * k + i]) << (8 * i);
      std::memcpy(&v[k], &u, 4);
    }
    pos_ += 4 * n;
    return v;
  }
  bool done() const { return pos_ == n_; }
  [[noreturn]] void bad(const std::string &what) const {
    format_error("checkpoint '" + path_ + "': " + what);
  }

 private:
  void need(uint64_t n) const {
    if (n > n_ - pos_) bad("truncated");
  }
  std::string path_;
  const uint8_t *p_;
  size_t n_, pos_ = 0;
};

std::vector<uint8_t> read_all(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(FLOWRT_IO_ERROR, "checkpoint '" + path + "': cannot open");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

void write_checkpoint(const std::string &path, const Checkpoint &c) {
  Writer w;
  w.u64(c.config.size());
  for (const auto &[k, v] : c.config) {
    w.str(k);
    w.str(v);
  }
  w.i64(c.step);
  w.i64(c.epoch);
  w.i64(c.batch_in_epoch);
  w.f64(c.best_test_bpd);
  w.i64(c.best_step);
  w.i64(c.skipped_steps);
  w.f64(c.elapsed_s);
  w.str(std::string(c.model_flow.begin(), c.model_flow.end()));
  w.floats(c.params);
  w.floats(c.adam_m);
  w.floats(c.adam_v);
  w.floats(c.ema);
  w.i64(c.adam_t);
  Writer file;
  file.raw(kMagic, sizeof kMagic);
  file.u64(w.bytes.size());
  file.raw(w.bytes.data(), w.bytes.size());
  file.u64(crc32_z(0L, w.bytes.data(), w.bytes.size()));
  atomic_write_file(path, file.bytes.data(), file.bytes.size());
}

Checkpoint read_checkpoint(const std::string &path) {
  const std::vector<uint8_t> bytes = read_all(path);
  return parse_checkpoint(bytes.data(), bytes.size(), path);
}

Checkpoint parse_checkpoint(const uint8_t *data, size_t size, const std::string &path) {
  Reader head(path, data, size);
  if (size < sizeof kMagic + 16 || std::memcmp(data, kMagic, sizeof kMagic) != 0)
    head.bad("not a flowtrain checkpoint (bad magic or too short)");
  Reader sizes(path, data + sizeof kMagic, size - sizeof kMagic);
  const uint64_t payload = sizes.u64();
  if (payload != size - sizeof kMagic - 16) head.bad("size mismatch (truncated or padded file)");
  const uint8_t *body = data + sizeof kMagic + 8;
  Reader tail(path, body + payload, 8);
  if (tail.u64() != crc32_z(0L, body, payload)) head.bad("checksum mismatch");
  Reader r(path, body, payload);
  Checkpoint c;
  const uint64_t n = r.u64();
  if (n > 4096) r.bad("too many settings");
  for (uint64_t i = 0; i < n; ++i) {
    std::string k = r.str();
    c.config.emplace_back(std::move(k), r.str());
  }
  c.step = r.i64();
  c.epoch = r.i64();
  c.batch_in_epoch = r.i64();
  c.best_test_bpd = r.f64();
  c.best_step = r.i64();
  c.skipped_steps = r.i64();
  c.elapsed_s = r.f64();
  const std::string flow = r.str();
  c.model_flow.assign(flow.begin(), flow.end());
  c.params = r.floats();
  c.adam_m = r.floats();
  c.adam_v = r.floats();
  c.ema = r.floats();
  c.adam_t = r.i64();
  if (!r.done()) r.bad("trailing bytes");
  if (c.adam_m.size() != c.params.size() || c.adam_v.size() != c.params.size() ||
      (!c.ema.empty() && c.ema.size() != c.params.size()))
    r.bad("inconsistent sizes");
  if (c.step < 0 || c.epoch < 0 || c.batch_in_epoch < 0 || c.best_step < 0 || c.skipped_steps < 0 ||
      c.adam_t < 0 || !(c.elapsed_s >= 0) || !std::isfinite(c.elapsed_s) ||
      !std::isfinite(c.best_test_bpd))
    r.bad("a step count, time or score is negative or not finite");
  // A run never saves non-finite state (its NaN/Inf guard skips such steps): these are damage.
  const std::pair<const char *, const std::vector<float> *> arrays[] = {
      {"parameter", &c.params},
      {"Adam first moment", &c.adam_m},
      {"Adam second moment", &c.adam_v},
      {"EMA weight", &c.ema}};
  for (const auto &[what, v] : arrays)
    for (size_t k = 0; k < v->size(); ++k)
      if (!std::isfinite((*v)[k]) || (v == &c.adam_v && (*v)[k] < 0))
        r.bad(std::string(what) + " " + std::to_string(k) + " is " + std::to_string((*v)[k]));
  return c;
}

std::string checkpoint_path(const std::string &dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "checkpoint-%08lld.ckpt", static_cast<long long>(step));
  return dir + "/" + name;
}

std::vector<std::string> list_checkpoints(const std::string &dir) {
  std::vector<std::string> names;
  if (DIR *d = ::opendir(dir.c_str())) {
    while (dirent *e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.rfind("checkpoint-", 0) == 0 && n.size() > 5 &&
          n.compare(n.size() - 5, 5, ".ckpt") == 0)
        names.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());  // zero-padded steps sort in order
  for (std::string &n : names) n = dir + "/" + n;
  return names;
}

void prune_checkpoints(const std::string &dir, size_t keep) {
  const std::vector<std::string> all = list_checkpoints(dir);
  for (size_t i = 0; i + keep < all.size(); ++i) std::remove(all[i].c_str());
}

}  // namespace flowrt::train
