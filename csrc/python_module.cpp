// The Python extension module torch_layerlr._C. `import torch_layerlr._C` loads this library, which runs the
// op registrations of ops.cpp and csrc/cuda/*.cu. No Python bindings: everything goes through torch.ops.layerlr.
// This is the one source file of the extension that needs Python; the C++ library (CMakeLists.txt) leaves it out.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
