// The argument handling of layerlr::dals_advance_ shared by its CPU and CUDA registrations (dals_advance.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <optional>

#include "dals_math.h"

namespace layerlr {

// Checks variant and the schedule's constants; throws a ValueError naming the argument.
DalsSchedule make_dals_schedule(c10::string_view variant, bool schedule, int64_t total_steps, double warmup_frac,
                                int64_t restart_mult);

// clock float64 [3], scale float64 [1], detector/filter_coef as dals_phase_, loss and found_inf one element,
// all written tensors on one device and disjoint.
void check_dals_advance_args(const at::Tensor& clock, const at::Tensor& scale, const at::Tensor& detector,
                             const at::Tensor& filter_coef, const std::optional<at::Tensor>& loss,
                             const std::optional<at::Tensor>& found_inf, at::ArrayRef<double> phase_alpha,
                             at::ArrayRef<double> phase_gate);

}  // namespace layerlr
