// Memory checks of the op boundary: a tensor the engine writes must not overlap itself, and must not share
// memory with any other tensor of the call. All checks look at metadata only (sizes, strides, addresses):
// O(number of tensors · log), never per element.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <ostream>
#include <vector>

namespace layerlr {

// The name of an op argument in an error message: "lr", or "exp_avgs[3]". Kept as a pointer and an index, and
// made text only when a check fails: the checks run on every call, for every tensor.
struct ArgName {
  ArgName(const char* list, int64_t index = -1) : list(list), index(index) {}  // NOLINT: implicit from a name
  const char* list;
  int64_t index;
};

inline std::ostream& operator<<(std::ostream& out, const ArgName& name) {
  out << name.list;
  if (name.index >= 0) out << "[" << name.index << "]";
  return out;
}

// One tensor of an op call, named for the error message, and whether the op writes it.
struct NamedTensor {
  const at::Tensor* tensor;
  ArgName name;
  bool written;
  // A grad overlapping itself (an expanded grad) is read through a dense copy, and written only there
  // (NOTE: [strided tensors] in engine/dense_views.h): it may overlap itself, not other tensors.
  bool copied_if_overlapping = false;
};

// Throws a ValueError naming the tensor if a written tensor may overlap itself (an expanded tensor, or
// strides whose elements collide), and one naming both tensors if any two tensors share memory where one of
// them is written. Read-only tensors may alias each other (e.g. one tensor passed as two per-tensor inputs).
//
// NOTE: [conservative overlap]
// Two tensors are compared by the byte ranges their elements span. Dense tensors fill their ranges, so an
// intersection is a real overlap. A strided tensor with gaps (x[::2]) may interleave with another one
// without sharing an element; such a pair is refused too ("may share memory"), because proving it safe
// would need a per-element walk. Parameters, gradients and optimizer states are never laid out that way.
void check_memory(const std::vector<NamedTensor>& tensors);

}  // namespace layerlr
