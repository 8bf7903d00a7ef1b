// The only file that knows Python. Engines live in csrc/<engine>/ and take plain
// pointers, sizes and strides; this file checks arguments and forwards.
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

namespace fastspec {

// What this binary was compiled with. Python's fastspec.backends() reads it, so a user
// can tell from the installed package alone what it can do and, for what it cannot, why.
py::dict build_info() {
  py::dict info;
  info["version"] = FASTSPEC_VERSION;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  info["compiler"] = std::string("msvc ") + std::to_string(_MSC_VER);
#else
  info["compiler"] = std::string("unknown");
#endif
  info["cplusplus"] = static_cast<long>(__cplusplus);

  // The CUDA kernels are a separate module (fastspec._C_cuda) so that this one never needs a
  // CUDA library; CMake tells this one whether it was built and, if not, why.
  py::dict cuda;
  cuda["built"] = static_cast<bool>(FASTSPEC_CUDA_BUILT);
  cuda[FASTSPEC_CUDA_BUILT ? "detail" : "reason"] = FASTSPEC_CUDA_DETAIL;
  info["cuda_kernels"] = cuda;

  py::dict infgram;
  infgram["built"] = false;
  infgram["reason"] = "the infini-gram suffix-array engine is not part of this version yet";
  info["infgram"] = infgram;
  return info;
}

}  // namespace fastspec

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastspec's compiled core (private; use the fastspec package)";
  m.attr("__version__") = FASTSPEC_VERSION;
  m.def("build_info", &fastspec::build_info,
        "What this binary was built with: version, compiler, and each optional engine "
        "with whether it was built and, if not, why.");
}
