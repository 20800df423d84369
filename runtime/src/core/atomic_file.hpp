// Writes a whole file so that a crash at any moment leaves either the old file or the complete
// new one: a temporary file in the same directory, fsync, rename, fsync of the directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flowrt {

// Throws Error(FLOWRT_IO_ERROR) naming the path and the system error.
void atomic_write_file(const std::string &path, const void *data, size_t size);

}  // namespace flowrt
