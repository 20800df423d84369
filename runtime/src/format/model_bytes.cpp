#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/limits.hpp"

namespace flowrt {
namespace {

class MappedBytes final : public ModelBytes {
 public:
  MappedBytes(void *p, size_t n) : p_(p), n_(n) {}
  ~MappedBytes() override { munmap(p_, n_); }
  const uint8_t *data() const override { return static_cast<const uint8_t *>(p_); }
  size_t size() const override { return n_; }

 private:
  void *p_;
  size_t n_;
};

// 64-byte aligned, so FlatBuffers' 32-byte tensor alignment holds in memory too.
class OwnedBytes final : public ModelBytes {
 public:
  explicit OwnedBytes(size_t n) : n_(n) {
    p_ = static_cast<uint8_t *>(std::aligned_alloc(64, ((n + 63) / 64) * 64 + 64));
    if (!p_) throw Error(FLOWRT_OUT_OF_MEMORY, "cannot allocate " + std::to_string(n) + " bytes");
  }
  ~OwnedBytes() override { std::free(p_); }
  uint8_t *mutable_data() { return p_; }
  const uint8_t *data() const override { return p_; }
  size_t size() const override { return n_; }

 private:
  uint8_t *p_;
  size_t n_;
};

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

std::shared_ptr<ModelBytes> map_model_file(const std::string &path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) fail(FLOWRT_IO_ERROR, "cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (fstat(f.fd, &st) != 0)
    fail(FLOWRT_IO_ERROR, "cannot stat '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(FLOWRT_IO_ERROR, "'" + path + "' is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8)
    format_error("'" + path + "' is too small to be a .flow model (" + std::to_string(size) +
                 " bytes)");
  if (size > limits::kMaxFileBytes)
    format_error("'" + path + "' is larger than the 2 GiB a .flow model may have");
  void *p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p != MAP_FAILED) return std::make_shared<MappedBytes>(p, size);
  if (errno == ENOMEM)
    fail(FLOWRT_OUT_OF_MEMORY, "cannot map '" + path + "' (" + std::to_string(size) +
                                   " bytes): out of memory or address space");
  // Some file systems cannot map: read instead.
  std::shared_ptr<OwnedBytes> owned;
  try {
    owned = std::make_shared<OwnedBytes>(size);
  } catch (const Error &e) {
    fail(e.status(), "'" + path + "': " + e.what());
  }
  size_t done = 0;
  while (done < size) {
    ssize_t r = read(f.fd, owned->mutable_data() + done, size - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail(FLOWRT_IO_ERROR, "cannot read '" + path + "'");
    done += static_cast<size_t>(r);
  }
  return owned;
}

std::shared_ptr<ModelBytes> copy_model_bytes(const void *data, size_t size) {
  if (!data) invalid_argument("data is NULL");
  if (size < 8)
    format_error("buffer is too small to be a .flow model (" + std::to_string(size) + " bytes)");
  if (size > limits::kMaxFileBytes)
    format_error("buffer is larger than the 2 GiB a .flow model may have");
  auto owned = std::make_shared<OwnedBytes>(size);
  std::memcpy(owned->mutable_data(), data, size);
  return owned;
}

}  // namespace flowrt
