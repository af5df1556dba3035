// The arguments of one fused step, checked once and shared by every backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

#include "recipe.h"

namespace layerlr {

struct StepArgs {
  at::TensorList params, grads, filters, exp_avgs, exp_avg_sqs, steps;
  at::Tensor lr;                                   // one element, or 1-D with one entry per tensor
  at::Tensor lr_mult, weight_decay, blend, trust;  // 1-D, one entry per tensor
  std::optional<at::Tensor> filter_coef;           // [alpha, gate] of the filter EMA
  std::optional<at::Tensor> grad_scale, found_inf; // GradScaler
  std::optional<at::Tensor> trust_ratios;          // out: the per-tensor ratios of this step
  Recipe recipe;
};

// Throws a ValueError/TypeError naming the offending argument; see ops.cpp.
void check_step_args(const StepArgs& a);

}  // namespace layerlr
