// The Python extension module fdperf._C. Importing it loads the operator registrations
// (TORCH_LIBRARY / TORCH_LIBRARY_IMPL in the other translation units); the functions here
// only report how the library was built.
#include <torch/extension.h>

namespace {
bool built_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fdperf native operators (registered under torch.ops.fdperf)";
  m.def("built_with_cuda", &built_with_cuda, "True when the CUDA kernels were compiled in");
}
