// The arguments of one fused step, checked once and shared by every backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <optional>

#include "recipe.h"
#include "state_precision.h"

namespace layerlr {

// NOTE: [split trust step]
// A two-pass (trust-ratio) step needs each tensor's norms. With sharded params (FSDP2) a rank holds only a
// shard of each tensor, so the norms are those of the whole logical tensor: the caller runs the step in two
// calls, reducing the squared norms between them (one collective for all tensors of the step), as apex's
// DistributedFusedLAMB does:
//   norms:  pass 1 (filter, moments; the direction of adam recipes into the grads) and the per-tensor squared
//           norms [||p||^2, ||u||^2] of the local tensors into sq_norms ([n, 2] float64). Params and step
//           counters are not touched, so the update call sees the same step.
//   update: the ratio from the sq_norms given (the reduced ones), pass 2, the step counters advance.
//   all:    both in one call (no sq_norms): the one-process step.
enum class TrustPass { kAll, kNorms, kUpdate };

inline TrustPass parse_trust_pass(c10::string_view s) {
  if (s == "all") return TrustPass::kAll;
  if (s == "norms") return TrustPass::kNorms;
  if (s == "update") return TrustPass::kUpdate;
  TORCH_CHECK_VALUE(false, "trust_pass must be 'all', 'norms' or 'update', got '", s, "'");
}

struct StepArgs {
  at::TensorList params, grads, filters, exp_avgs, exp_avg_sqs, steps;
  at::Tensor lr;                                   // one element, or 1-D with one entry per tensor
  at::Tensor lr_mult, weight_decay, blend, trust;  // 1-D, one entry per tensor
  std::optional<at::Tensor> filter_coef;           // [alpha, gate] of the filter EMA
  std::optional<at::Tensor> grad_scale, found_inf; // GradScaler
  std::optional<at::Tensor> trust_ratios;          // out: the per-tensor ratios of this step
  Recipe recipe;
  std::optional<at::Tensor> sq_norms;  // [n, 2] float64: out of a norms call, in to an update call
  TrustPass pass = TrustPass::kAll;
  // NOTE: [state precision] in state_precision.h. Low-precision state: filters, exp_avgs and exp_avg_sqs hold
  // bfloat16 values or uint8 codes (contiguous); int8 adds one float32 absmax per block of each state tensor.
  StatePrecision precision = StatePrecision::kFull;
  at::TensorList filter_scales, exp_avg_scales, exp_avg_sq_scales;
  int64_t seed = 0;  // of the stochastic rounding of bf16 state
};

// Throws a ValueError/TypeError naming the offending argument; see ops.cpp.
void check_step_args(const StepArgs& a);

}  // namespace layerlr
