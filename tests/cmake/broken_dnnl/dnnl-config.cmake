# A oneDNN CMake package shaped like Debian's: it finds a dependency of its own with REQUIRED
# through a find module it ships, and that dependency (Debian's: OpenCL) is missing, so loading
# the package is a fatal error.
list(INSERT CMAKE_MODULE_PATH 0 ${CMAKE_CURRENT_LIST_DIR})
find_package(FlowrtMissingOpenCL REQUIRED)
