# Installs libflowrt for apps: the library, flowrt.h / flowrt.hpp, a CMake package
# (find_package(flowrt) -> flowrt::flowrt) and a pkg-config file (pkg-config --cflags --libs flowrt).
include(CMakePackageConfigHelpers)

install(TARGETS flowrt EXPORT flowrtTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES runtime/include/flowrt.h runtime/include/flowrt.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(FLOWRT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/flowrt)
install(EXPORT flowrtTargets NAMESPACE flowrt:: DESTINATION ${FLOWRT_CMAKE_DIR})
configure_package_config_file(cmake/flowrt-config.cmake.in
  ${PROJECT_BINARY_DIR}/flowrt-config.cmake INSTALL_DESTINATION ${FLOWRT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/flowrt-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/flowrt-config.cmake
              ${PROJECT_BINARY_DIR}/flowrt-config-version.cmake
        DESTINATION ${FLOWRT_CMAKE_DIR})

# pkg-config: a static library needs its dependencies on the link line (it links its backends;
# a shared one loads them as plugins and needs nothing more).
set(FLOWRT_PC_LIBS_PRIVATE "-lstdc++ -lm")
foreach(lib IN LISTS CMAKE_DL_LIBS)
  string(APPEND FLOWRT_PC_LIBS_PRIVATE " -l${lib}")
endforeach()
if(OpenMP_CXX_FOUND)
  string(APPEND FLOWRT_PC_LIBS_PRIVATE " ${OpenMP_CXX_FLAGS}")
endif()
if(NOT BUILD_SHARED_LIBS AND FLOWRT_HAVE_ONEDNN)
  string(APPEND FLOWRT_PC_LIBS_PRIVATE " -ldnnl")
endif()
if(NOT BUILD_SHARED_LIBS AND FLOWRT_HAVE_CUDA)
  string(APPEND FLOWRT_PC_LIBS_PRIVATE " -L${CUDAToolkit_LIBRARY_DIR} -lcublas -lcudart")
endif()
if(BUILD_SHARED_LIBS)
  set(FLOWRT_PC_CFLAGS "")
else()
  set(FLOWRT_PC_CFLAGS " -DFLOWRT_STATIC_DEFINE")
endif()
configure_file(cmake/flowrt.pc.in ${PROJECT_BINARY_DIR}/flowrt.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/flowrt.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
