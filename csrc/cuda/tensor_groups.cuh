// Kernels with one thread (or one block) per tensor: the per-tensor coefficients before a step, the finish of
// a two-pass step or of tensor_norms after it. Their per-tensor data goes by value too (NOTE: [kernel argument
// budget] in multi_tensor_apply.cuh), in groups of up to kGroupSize consecutive tensors, one launch per group.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace layerlr::cuda {

static constexpr int kGroupSize = 128;
static constexpr int kFinishThreads = 256;  // block size of the one-block-per-tensor finish kernels

struct TensorGroup {
  void* steps[kGroupSize];                // the step counter of each tensor (fused_step_ only)
  int64_t chunk_begin[kGroupSize + 1];    // tensor first + j owns the chunks [chunk_begin[j], chunk_begin[j + 1])
  int first;                              // global index of the group's first tensor
  int count;                              // tensors in the group, 1..kGroupSize
};

// Groups of the n tensors. steps (one pointer per tensor) may be empty; chunk_begin is chunk_offsets() (n + 1
// entries) or empty.
inline std::vector<TensorGroup> tensor_groups(int64_t n, const std::vector<void*>& steps,
                                              const std::vector<int64_t>& chunk_begin) {
  TORCH_CHECK(steps.empty() || static_cast<int64_t>(steps.size()) == n, "tensor_groups: one step per tensor");
  TORCH_CHECK(chunk_begin.empty() || static_cast<int64_t>(chunk_begin.size()) == n + 1,
              "tensor_groups: n + 1 chunk offsets");
  std::vector<TensorGroup> groups;
  for (int64_t first = 0; first < n; first += kGroupSize) {
    TensorGroup g{};
    g.first = static_cast<int>(first);
    g.count = static_cast<int>(std::min<int64_t>(kGroupSize, n - first));
    for (int j = 0; j < g.count; ++j) g.steps[j] = steps.empty() ? nullptr : steps[first + j];
    for (int j = 0; j <= g.count; ++j) g.chunk_begin[j] = chunk_begin.empty() ? 0 : chunk_begin[first + j];
    groups.push_back(g);
  }
  return groups;
}

}  // namespace layerlr::cuda
