# LibTorch from the pinned PyPI torch wheel (deploy/requirements.lock), as the imported
# target microrl::torch, plus microrl_torch_library() for targets that use it.
#
# The wheel carries headers, libtorch*.so and the CUDA runtime libraries it needs (the
# nvidia-* wheels, found through libtorch_cuda.so's own RPATH), so no CUDA toolkit is
# needed to build or run: on a machine without a GPU, CUDA is simply unavailable. We do
# not use the wheel's TorchConfig.cmake because it requires a CUDA toolkit (nvcc) at
# configure time and costs ~5 s per configure.

# The torch package of MICRORL_PYTHON's environment, looked up at every configure so a
# different venv is picked up; MICRORL_TORCH_DIR may name one directly instead.
if(MICRORL_PYTHON)
  execute_process(
    COMMAND ${MICRORL_PYTHON} -c
      "import sysconfig; print(sysconfig.get_paths()['purelib'] + '/torch')"
    OUTPUT_VARIABLE _torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "cannot run MICRORL_PYTHON=${MICRORL_PYTHON}")
  endif()
  set(MICRORL_TORCH_DIR ${_torch_dir})
elseif(NOT MICRORL_TORCH_DIR)
  message(FATAL_ERROR
    "LibTorch not found: configure with -DMICRORL_PYTHON=<venv>/bin/python "
    "(deploy/setup.sh does) or -DMICRORL_TORCH_DIR=<site-packages>/torch")
endif()
if(NOT EXISTS ${MICRORL_TORCH_DIR}/lib/libtorch.so OR
   NOT EXISTS ${MICRORL_TORCH_DIR}/include/ATen/ATen.h)
  message(FATAL_ERROR "no LibTorch at ${MICRORL_TORCH_DIR} (run deploy/setup.sh)")
endif()
message(STATUS "LibTorch: ${MICRORL_TORCH_DIR}")

# The wheel's include/ also carries an old copy of protobuf's headers (google/protobuf),
# which would shadow the system protobuf that gRPC code uses. Expose every other entry
# through a directory of symbolic links instead.
set(_torch_include ${CMAKE_BINARY_DIR}/torch_include)
file(MAKE_DIRECTORY ${_torch_include})
file(GLOB _entries RELATIVE ${MICRORL_TORCH_DIR}/include ${MICRORL_TORCH_DIR}/include/*)
foreach(_entry IN LISTS _entries)
  if(NOT _entry STREQUAL "google")
    file(CREATE_LINK ${MICRORL_TORCH_DIR}/include/${_entry} ${_torch_include}/${_entry}
         SYMBOLIC)
  endif()
endforeach()

add_library(microrl::torch INTERFACE IMPORTED)
set_target_properties(microrl::torch PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES
    "${_torch_include};${MICRORL_TORCH_DIR}/include/torch/csrc/api/include"
  INTERFACE_SYSTEM_INCLUDE_DIRECTORIES
    "${_torch_include};${MICRORL_TORCH_DIR}/include/torch/csrc/api/include"
  # The wheel is built with the C++11 ABI.
  INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=1"
  # -pthread (defining _REENTRANT) on every torch TU, as gRPC gives its users: a TU that
  # mixes gRPC and torch then still matches the shared precompiled header.
  INTERFACE_COMPILE_OPTIONS "-pthread"
  # libtorch.so itself needs libtorch_cuda.so, so CUDA registers whenever a GPU is present.
  INTERFACE_LINK_LIBRARIES
    "${MICRORL_TORCH_DIR}/lib/libtorch.so;${MICRORL_TORCH_DIR}/lib/libtorch_cpu.so;${MICRORL_TORCH_DIR}/lib/libc10.so;Threads::Threads"
  INTERFACE_LINK_DIRECTORIES "${MICRORL_TORCH_DIR}/lib")

# microrl::torch_cuda: LibTorch's CUDA-side C++ API (c10/cuda, ATen/cuda) for the few TUs
# that need it (allocator caps, CUDA IPC). Its headers include the CUDA runtime's, which the
# wheel's nvidia-* packages carry, so no CUDA toolkit is needed here either.
find_path(MICRORL_CUDA_RUNTIME_INCLUDE cuda_runtime_api.h
  PATHS ${MICRORL_TORCH_DIR}/../nvidia/cu13/include
        ${MICRORL_TORCH_DIR}/../nvidia/cuda_runtime/include
  NO_DEFAULT_PATH)
if(NOT MICRORL_CUDA_RUNTIME_INCLUDE)
  message(FATAL_ERROR "no cuda_runtime_api.h in the torch wheel's nvidia packages "
                      "under ${MICRORL_TORCH_DIR}/.. (run deploy/setup.sh)")
endif()
# The CUDA runtime library beside it (the c10/cuda headers call it inline).
find_library(MICRORL_CUDART NAMES libcudart.so.13 libcudart.so.12 cudart
  PATHS ${MICRORL_CUDA_RUNTIME_INCLUDE}/../lib NO_DEFAULT_PATH)
if(NOT MICRORL_CUDART)
  message(FATAL_ERROR "no libcudart beside ${MICRORL_CUDA_RUNTIME_INCLUDE}")
endif()
add_library(microrl::torch_cuda INTERFACE IMPORTED)
set_target_properties(microrl::torch_cuda PROPERTIES
  INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${MICRORL_CUDA_RUNTIME_INCLUDE}"
  INTERFACE_INCLUDE_DIRECTORIES "${MICRORL_CUDA_RUNTIME_INCLUDE}"
  INTERFACE_LINK_LIBRARIES
    "microrl::torch;${MICRORL_TORCH_DIR}/lib/libc10_cuda.so;${MICRORL_TORCH_DIR}/lib/libtorch_cuda.so;${MICRORL_CUDART}")

# One precompiled header shared by torch TUs (REUSE_FROM needs identical flags, which
# these helpers guarantee). <torch/types.h> gives tensors and autograd; a TU that needs
# torch::nn or torch::optim includes those itself. Measured here (2 cores, -O3): a TU
# including <torch/types.h> compiles in ~6.5 s alone and ~2 s with the PCH; building the
# PCH takes ~14 s and 450 MB, so it pays from about three such TUs. A TU that includes
# only light ATen headers is faster without it (common/device: 3.6 s vs 4.6 s) and opts
# out with NO_PCH. The PCH is built only when a target uses it.
add_library(microrl_torch_pch STATIC EXCLUDE_FROM_ALL ${CMAKE_CURRENT_LIST_DIR}/torch_pch.cc)
target_link_libraries(microrl_torch_pch PUBLIC microrl::torch)
target_precompile_headers(microrl_torch_pch PRIVATE <torch/types.h>)

# microrl_use_torch_pch(<target>): compile <target> with the shared torch PCH.
function(microrl_use_torch_pch target)
  target_link_libraries(${target} PRIVATE microrl::torch)
  target_precompile_headers(${target} REUSE_FROM microrl_torch_pch)
endfunction()

# microrl_torch_library(<name> [TORCH_PRIVATE] [NO_PCH] <sources>...): a static library
# that links LibTorch. TORCH_PRIVATE: its headers are torch-free, so its users get no
# torch include paths. NO_PCH: its TUs include only light ATen/c10 headers.
function(microrl_torch_library name)
  cmake_parse_arguments(ARG "TORCH_PRIVATE;NO_PCH" "" "" ${ARGN})
  add_library(${name} STATIC ${ARG_UNPARSED_ARGUMENTS})
  if(ARG_TORCH_PRIVATE)
    target_link_libraries(${name} PRIVATE microrl::torch)
  else()
    target_link_libraries(${name} PUBLIC microrl::torch)
  endif()
  if(NOT ARG_NO_PCH)
    target_precompile_headers(${name} REUSE_FROM microrl_torch_pch)
  endif()
endfunction()
