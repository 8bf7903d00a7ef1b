# The optional CUDA spectral engine, fastspec._C_cuda (faiss-style optional GPU).
#
# FASTSPEC_CUDA = AUTO (default) | ON | OFF, from `-C cmake.define.FASTSPEC_CUDA=...` at
# `pip install` time (or -D), else from the environment variable FASTSPEC_CUDA.
#   AUTO: build the kernels when nvcc and the cuBLAS and cuSOLVER headers and libraries are
#         found, else build the CPU parts alone and record why;
#   ON:   build them or fail, naming what is missing;  OFF: skip them.
# cuBLAS/cuSOLVER are looked for first in the nvidia-* wheels of the Python environment being
# installed into (what CUDA builds of torch install: nvidia/cu13/{include,lib} for CUDA 13,
# nvidia/<lib>/{include,lib} for CUDA 12), then in the CUDA toolkit of nvcc, CUDA_HOME and
# CUDA_PATH, then the system. GPU architectures: CMAKE_CUDA_ARCHITECTURES (or the CUDAARCHS
# environment variable), default 80-real;90 (A100 SASS; H100 SASS plus PTX for newer GPUs).
#
# Sets FASTSPEC_CUDA_BUILT (ON/OFF) and FASTSPEC_CUDA_DETAIL (what was built, or why not),
# and defines the target _C_cuda when built.

if(DEFINED FASTSPEC_CUDA)
  set(_fs_mode "${FASTSPEC_CUDA}")
elseif(DEFINED ENV{FASTSPEC_CUDA})
  set(_fs_mode "$ENV{FASTSPEC_CUDA}")
else()
  set(_fs_mode AUTO)
endif()
# Not cached: a value given for one build must not stick to the next in a reused build dir.
unset(FASTSPEC_CUDA CACHE)
string(TOUPPER "${_fs_mode}" _fs_mode)
if(_fs_mode MATCHES "^(1|TRUE|YES)$")
  set(_fs_mode ON)
elseif(_fs_mode MATCHES "^(0|FALSE|NO)$")
  set(_fs_mode OFF)
endif()
if(NOT _fs_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "FASTSPEC_CUDA must be AUTO, ON or OFF, got '${_fs_mode}'")
endif()

set(FASTSPEC_CUDA_BUILT OFF)
set(FASTSPEC_CUDA_DETAIL "")
set(_fs_missing "")

if(_fs_mode STREQUAL "OFF")
  set(FASTSPEC_CUDA_DETAIL "not built: switched off at build time (FASTSPEC_CUDA=OFF)")
  message(STATUS "fastspec: CUDA kernels: ${FASTSPEC_CUDA_DETAIL}")
  return()
endif()

# -- nvcc ----------------------------------------------------------------------------------
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  list(APPEND _fs_missing "nvcc (the CUDA compiler: put it on PATH or set CUDACXX)")
endif()

# -- cuBLAS and cuSOLVER -------------------------------------------------------------------
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import os, site, sysconfig\np = [sysconfig.get_paths()[k] for k in ('purelib', 'platlib')]\ntry:\n    p += site.getsitepackages()\nexcept AttributeError:\n    pass\ntry:\n    import nvidia\n    p += [os.path.dirname(d) for d in nvidia.__path__]\nexcept ImportError:\n    pass\nprint(';'.join(dict.fromkeys(d for d in p if os.path.isdir(d))))"
  OUTPUT_VARIABLE _fs_sites OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _fs_rc)
if(NOT _fs_rc EQUAL 0)
  set(_fs_sites "")
endif()
set(_fs_roots "")
foreach(_site IN LISTS _fs_sites)
  foreach(_sub cu13 cu12 cublas cusolver cuda_runtime)
    if(IS_DIRECTORY "${_site}/nvidia/${_sub}")
      list(APPEND _fs_roots "${_site}/nvidia/${_sub}")
    endif()
  endforeach()
endforeach()
if(CMAKE_CUDA_COMPILER)
  get_filename_component(_fs_nvcc "${CMAKE_CUDA_COMPILER}" REALPATH)
  get_filename_component(_fs_toolkit "${_fs_nvcc}/../.." ABSOLUTE)
  list(APPEND _fs_roots "${_fs_toolkit}")
endif()
foreach(_env CUDA_HOME CUDA_PATH)
  if(DEFINED ENV{${_env}})
    list(APPEND _fs_roots "$ENV{${_env}}")
  endif()
endforeach()

# Wheels ship only versioned sonames (libcublas.so.13), so those are asked for by file name.
# Nothing is cached: a build dir reused by another environment must look again.
foreach(_lib cublas cusolver)
  if(_lib STREQUAL "cublas")
    set(_header cublas_v2.h)
    set(_names libcublas.so.13 libcublas.so.12 cublas)
  else()
    set(_header cusolverDn.h)
    set(_names libcusolver.so.12 libcusolver.so.11 cusolver)
  endif()
  unset(_fs_inc_${_lib} CACHE)
  unset(_fs_lib_${_lib} CACHE)
  find_path(_fs_inc_${_lib} ${_header} HINTS ${_fs_roots} PATH_SUFFIXES include targets/x86_64-linux/include targets/sbsa-linux/include)
  find_library(_fs_lib_${_lib} NAMES ${_names} HINTS ${_fs_roots} PATH_SUFFIXES lib lib64 targets/x86_64-linux/lib targets/sbsa-linux/lib)
  if(NOT _fs_inc_${_lib})
    list(APPEND _fs_missing "${_header} (${_lib} headers)")
  endif()
  if(NOT _fs_lib_${_lib})
    list(APPEND _fs_missing "lib${_lib} (${_names})")
  endif()
endforeach()

if(_fs_missing)
  string(REPLACE ";" ", " _fs_missing_text "${_fs_missing}")
  string(REPLACE ";" ", " _fs_roots_text "${_fs_roots}")
  if(NOT _fs_roots_text)
    set(_fs_roots_text "none found")
  endif()
  set(_fs_why "missing ${_fs_missing_text} (searched the nvidia-* wheels of ${Python_EXECUTABLE}, nvcc's toolkit, CUDA_HOME and CUDA_PATH: ${_fs_roots_text}; and the system's default paths)")
  if(_fs_mode STREQUAL "ON")
    message(FATAL_ERROR "FASTSPEC_CUDA=ON but the CUDA kernels cannot be built: ${_fs_why}. "
      "pip install nvidia-cublas nvidia-cusolver (or a CUDA toolkit with them) and make nvcc visible, "
      "or build with FASTSPEC_CUDA=AUTO/OFF.")
  endif()
  set(FASTSPEC_CUDA_DETAIL "not built: ${_fs_why}; install nvidia-cublas and nvidia-cusolver (CUDA builds of torch bring them) and reinstall fastspec")
  message(STATUS "fastspec: CUDA kernels: ${FASTSPEC_CUDA_DETAIL}")
  return()
endif()

# -- the module ----------------------------------------------------------------------------
enable_language(CUDA)
set(_fs_src "${CMAKE_CURRENT_LIST_DIR}")
python_add_library(_C_cuda MODULE WITH_SOABI
  "${_fs_src}/../bindings_cuda.cpp"
  "${_fs_src}/accumulate.cu"
  "${_fs_src}/device.cpp"
  "${_fs_src}/eigen.cpp"
  "${_fs_src}/errors.cpp")
target_link_libraries(_C_cuda PRIVATE pybind11::headers "${_fs_lib_cublas}" "${_fs_lib_cusolver}")
target_include_directories(_C_cuda PRIVATE "${_fs_src}/.." ${CMAKE_CUDA_TOOLKIT_INCLUDE_DIRECTORIES}
  "${_fs_inc_cublas}" "${_fs_inc_cusolver}")
target_compile_features(_C_cuda PRIVATE cxx_std_17 cuda_std_17)
string(REPLACE ";" "," _fs_archs "${CMAKE_CUDA_ARCHITECTURES}")
target_compile_definitions(_C_cuda PRIVATE FASTSPEC_CUDA_ARCHITECTURES="${_fs_archs}")
# The CUDA runtime is linked statically (CMake's default), so the module needs no
# libcudart at all and loads on a machine without a driver; cuBLAS/cuSOLVER are found at run
# time next to the module's environment ($ORIGIN/../nvidia/...: the wheels torch also loads)
# or where they were at build time.
set_target_properties(_C_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static CXX_VISIBILITY_PRESET hidden
  CUDA_VISIBILITY_PRESET hidden)
set(_fs_rpath "")
foreach(_lib IN ITEMS "${_fs_lib_cublas}" "${_fs_lib_cusolver}")
  get_filename_component(_dir "${_lib}" DIRECTORY)
  foreach(_site IN LISTS _fs_sites)
    string(FIND "${_dir}" "${_site}/" _at)
    if(_at EQUAL 0)
      file(RELATIVE_PATH _rel "${_site}/fastspec" "${_dir}")
      list(APPEND _fs_rpath "$ORIGIN/${_rel}")
    endif()
  endforeach()
  list(APPEND _fs_rpath "${_dir}")
endforeach()
list(REMOVE_DUPLICATES _fs_rpath)
set_target_properties(_C_cuda PROPERTIES INSTALL_RPATH "${_fs_rpath}" BUILD_RPATH "${_fs_rpath}")
install(TARGETS _C_cuda DESTINATION fastspec)

set(FASTSPEC_CUDA_BUILT ON)
get_filename_component(_fs_libdir_cublas "${_fs_lib_cublas}" DIRECTORY)
set(FASTSPEC_CUDA_DETAIL "built with nvcc ${CMAKE_CUDA_COMPILER_VERSION} for ${_fs_archs}, cuBLAS/cuSOLVER from ${_fs_libdir_cublas}")
message(STATUS "fastspec: CUDA kernels: ${FASTSPEC_CUDA_DETAIL}")
