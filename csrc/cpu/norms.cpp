// Deterministic per-tensor L2 norms on the CPU: per-chunk partials, added per tensor in chunk order
// (NOTE: [chunking territory, CPU] in loops.h).
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <cmath>

#include "cpu_backend.h"
#include "loops.h"

namespace layerlr::cpu {
namespace {

template <typename scalar_t>
double sum_of_squares(const scalar_t* x, int64_t begin, int64_t end) {
  using T = at::opmath_type<scalar_t>;
  using Vec = at::vec::Vectorized<T>;
  Vec acc(0);
  int64_t i = begin;
  for (; i + Vec::size() <= end; i += Vec::size()) {
    const Vec v = IO<scalar_t, Vec>::load(x + i);
    acc = acc + v * v;
  }
  T tail = 0;
  for (; i < end; ++i) tail += static_cast<T>(x[i]) * static_cast<T>(x[i]);
  return static_cast<double>(lane_sum(acc)) + static_cast<double>(tail);
}

}  // namespace

at::Tensor tensor_norms(at::TensorList tensors) {
  const int64_t n = static_cast<int64_t>(tensors.size());
  const auto dtype = n ? tensors[0].scalar_type() : at::kFloat;
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(at::toOpMathType(dtype)));
  if (n == 0) return out;
  std::vector<at::Tensor> dense(n);
  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (int64_t t = 0; t < n; ++t) {
    dense[t] = tensors[t].is_non_overlapping_and_dense() ? tensors[t] : tensors[t].contiguous();
    for (int64_t b = 0; b < dense[t].numel(); b += kChunk)
      chunks.push_back({t, b, std::min(dense[t].numel(), b + kChunk)});
    total += dense[t].numel();
  }
  std::vector<double> partials(chunks.size());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "layerlr_tensor_norms", [&] {
    for_each_chunk(chunks, 0, chunks.size(), total, [&](const Chunk& c, int64_t k) {
      partials[k] = sum_of_squares(static_cast<const scalar_t*>(dense[c.tensor].const_data_ptr()), c.begin, c.end);
    });
  });
  std::vector<double> sq(n, 0.0);
  for (size_t k = 0; k < chunks.size(); ++k) sq[chunks[k].tensor] += partials[k];
  for (int64_t t = 0; t < n; ++t) write_scalar(out, t, std::sqrt(sq[t]));
  return out;
}

}  // namespace layerlr::cpu
