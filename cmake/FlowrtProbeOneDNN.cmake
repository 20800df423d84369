# flowrt_probe_onednn(<usable-var> <why-var>): can oneDNN's CMake package be loaded here?
# It is loaded in a child configure of cmake/probe/dnnl, because a package that fails inside
# (a REQUIRED dependency of its own missing, as Debian's OpenCL one) is a fatal error that the
# parent could not catch. <why-var> gets the first line that says what is wrong. The verdict is
# cached for the package directory it found and the prefix path it searched.
function(flowrt_probe_onednn usable_var why_var)
  set(key "${CMAKE_PREFIX_PATH}|${dnnl_DIR}|${CMAKE_CXX_COMPILER}")
  if(DEFINED CACHE{FLOWRT_ONEDNN_PROBE_KEY} AND FLOWRT_ONEDNN_PROBE_KEY STREQUAL key
     AND FLOWRT_ONEDNN_PROBE_OK)
    set(${usable_var} ON PARENT_SCOPE)
    set(${why_var} "" PARENT_SCOPE)
    return()
  endif()
  set(dir ${PROJECT_BINARY_DIR}/flowrt-probe-dnnl)
  file(REMOVE_RECURSE ${dir})
  set(args -S ${PROJECT_SOURCE_DIR}/cmake/probe/dnnl -B ${dir}
      -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
  if(CMAKE_PREFIX_PATH)
    string(REPLACE ";" "\\;" prefix "${CMAKE_PREFIX_PATH}")
    list(APPEND args "-DCMAKE_PREFIX_PATH=${prefix}")
  endif()
  if(dnnl_DIR)
    list(APPEND args "-Ddnnl_DIR=${dnnl_DIR}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(rc EQUAL 0)
    set(${usable_var} ON PARENT_SCOPE)
    set(${why_var} "" PARENT_SCOPE)
    set(FLOWRT_ONEDNN_PROBE_KEY "${key}" CACHE INTERNAL "")
    set(FLOWRT_ONEDNN_PROBE_OK ON CACHE INTERNAL "")
    return()
  endif()
  set(FLOWRT_ONEDNN_PROBE_OK OFF CACHE INTERNAL "")
  # The most telling line: our own verdict, else CMake's "Could NOT find X (missing: ...)",
  # else the first error line.
  set(why "loading oneDNN's CMake package failed (see ${dir})")
  string(REGEX MATCH "FLOWRT_PROBE: [^\n]*" own "${err}")
  string(REGEX MATCH "Could NOT find [^\n]*" missing "${err}")
  if(own)
    string(REPLACE "FLOWRT_PROBE: " "" why "${own}")
  elseif(missing)
    string(STRIP "${missing}" missing)
    set(why "oneDNN's CMake package needs a dependency that is missing: ${missing}")
    if(missing MATCHES "^Could NOT find OpenCL ")
      string(APPEND why " (Debian: ocl-icd-opencl-dev)")
    endif()
  endif()
  set(${usable_var} OFF PARENT_SCOPE)
  set(${why_var} "${why}" PARENT_SCOPE)
endfunction()
