// See memory.h.
#include "memory.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>

namespace layerlr {
namespace {

// True when no two elements of t share an address: sorted by stride, every dimension's stride steps over the
// whole extent of the smaller ones. (Sufficient, not necessary: interleaved layouts are refused as well.)
bool self_disjoint(const at::Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dimensions longer than 1
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) == 0) return true;
    if (t.size(d) > 1) dims.emplace_back(t.stride(d), t.size(d));
  }
  std::sort(dims.begin(), dims.end());
  int64_t extent = 1;  // elements spanned by the dimensions seen so far
  for (const auto& [stride, size] : dims) {
    if (stride < extent) return false;
    extent = stride * (size - 1) + extent;
  }
  return true;
}

struct Span {
  c10::Device device;
  uintptr_t begin, end;  // bytes [begin, end)
  size_t index;          // into the caller's list
};

Span span_of(const at::Tensor& t, size_t index) {
  int64_t last = 0;  // offset of the last element, in elements
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  return {t.device(), begin, begin + static_cast<uintptr_t>((last + 1) * t.element_size()), index};
}

}  // namespace

void check_memory(const std::vector<NamedTensor>& tensors) {
  std::vector<Span> spans;
  spans.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = *tensors[i].tensor;
    if (!t.defined() || t.numel() == 0 || t.is_meta()) continue;
    TORCH_CHECK_VALUE(!tensors[i].written || tensors[i].copied_if_overlapping || self_disjoint(t), tensors[i].name,
                      " overlaps itself (an expanded or self-overlapping view, strides ", t.strides(),
                      "): the fused step writes it and needs one memory location per element");
    spans.push_back(span_of(t, i));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    if (a.device != b.device) return a.device.str() < b.device.str();
    return a.begin < b.begin;
  });
  // Sweep in address order, remembering the span reaching furthest among all tensors and among the written
  // ones: a span overlaps some earlier span iff it starts before the furthest end seen (on its device).
  const Span* furthest = nullptr;
  const Span* furthest_written = nullptr;
  for (const Span& s : spans) {
    if (furthest && furthest->device != s.device) furthest = furthest_written = nullptr;
    const NamedTensor& mine = tensors[s.index];
    const Span* other = mine.written ? furthest : furthest_written;
    if (other && s.begin < other->end) {
      const NamedTensor& theirs = tensors[other->index];
      const bool dense = mine.tensor->is_non_overlapping_and_dense() && theirs.tensor->is_non_overlapping_and_dense();
      TORCH_CHECK_VALUE(false, theirs.name, " and ", mine.name, dense ? " share memory" : " may share memory",
                        " (NOTE: [conservative overlap]): the fused step writes ",
                        mine.written ? mine.name : theirs.name,
                        ", so every parameter, gradient and state tensor must have memory of its own (is a "
                        "parameter listed twice, or a view of another one?)");
    }
    if (!furthest || s.end > furthest->end) furthest = &s;
    if (mine.written && (!furthest_written || s.end > furthest_written->end)) furthest_written = &s;
  }
}

}  // namespace layerlr
