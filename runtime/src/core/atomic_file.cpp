#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.hpp"

namespace flowrt {

void atomic_write_file(const std::string &path, const void *data, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  // The message names the file the caller asked for and the cause (ENOSPC: "No space left on
  // device"); the temporary file goes, and whatever `path` held before stays as it was.
  auto io_fail = [&](const std::string &what, int err, int fd) {
    if (fd >= 0) close(fd);
    unlink(tmp.c_str());
    fail(FLOWRT_IO_ERROR,
         "cannot write '" + path + "' (" + what + " " + tmp + "): " + std::strerror(err));
  };
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_fail("creating", errno, -1);
  const auto *p = static_cast<const uint8_t *>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t w = write(fd, p + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) io_fail("writing", errno, fd);
    if (w == 0) io_fail("writing", ENOSPC, fd);
    done += static_cast<size_t>(w);
  }
  if (fsync(fd) != 0) io_fail("syncing", errno, fd);
  if (close(fd) != 0) io_fail("closing", errno, -1);
  if (rename(tmp.c_str(), path.c_str()) != 0) io_fail("renaming", errno, -1);
  // Make the rename itself durable.
  std::string dir =
      path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  int dfd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

}  // namespace flowrt
