// The tensors a backend's loops walk, per parameter: param, grad, filter, first and second moment.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "step_args.h"

namespace layerlr {

// Index constants of a parameter's companions, in the order of the op's lists.
constexpr int kParamIdx = 0, kGradIdx = 1, kFilterIdx = 2, kExpAvgIdx = 3, kExpAvgSqIdx = 4, kDepth = 5;

// NOTE: [strided tensors]
// The loops walk memory linearly. That is right whenever a tensor and all its companions are dense and share
// one stride layout, the usual case: grads and states are created like the param. Anything else runs on
// contiguous copies, written back after the step (except the grad, which the step only reads, and overwrites
// only in its own copy: NOTE: [adam direction in the grad buffer]; but see grad_carries_direction).
struct DenseViews {
  std::vector<at::Tensor> views;       // [t * kDepth + d]; undefined where the recipe has no such state
  std::vector<at::Tensor> write_back;  // the originals of the copies among them

  explicit DenseViews(const StepArgs& a) {
    const size_t n = a.params.size();
    views.resize(n * kDepth);
    write_back.resize(n * kDepth);
    // The norms call of a split adam step leaves its direction in the grads for the update call to read
    // (NOTE: [split trust step] in step_args.h), so a copied grad is written back too.
    const bool grad_carries_direction = a.pass == TrustPass::kNorms && a.recipe.writes_grads();
    for (size_t t = 0; t < n; ++t) {
      const at::Tensor& p = a.params[t];
      const at::Tensor* src[kDepth] = {&p, &a.grads[t], a.filters.empty() ? nullptr : &a.filters[t],
                                       a.exp_avgs.empty() ? nullptr : &a.exp_avgs[t],
                                       a.exp_avg_sqs.empty() ? nullptr : &a.exp_avg_sqs[t]};
      // Low-precision state is kept contiguous (checked at the op boundary) and blocked in that order, so its
      // param and grad are walked in the same order: contiguous, or through contiguous copies.
      const bool low = a.precision != StatePrecision::kFull;
      bool direct = low ? p.is_contiguous() && a.grads[t].is_contiguous() : p.is_non_overlapping_and_dense();
      for (int d = 1; d < kDepth && direct && !low; ++d)
        if (src[d]) direct = src[d]->strides() == p.strides();
      for (int d = 0; d < kDepth; ++d) {
        if (!src[d]) continue;
        if (low && d >= kFilterIdx) {
          views[t * kDepth + d] = *src[d];
          continue;
        }
        views[t * kDepth + d] = direct ? *src[d] : src[d]->contiguous();
        if (!direct && (d != kGradIdx || grad_carries_direction)) write_back[t * kDepth + d] = *src[d];
      }
    }
  }

  void finish() {
    for (size_t k = 0; k < views.size(); ++k)
      if (write_back[k].defined()) write_back[k].copy_(views[k]);
  }
};

}  // namespace layerlr
