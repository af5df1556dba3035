// The constant part of one fused step (mirrors torch_layerlr._ops.Recipe; see csrc/engine/recipe.h for each
// stage's meaning), and the thin C++ calls of the engine's ops through the dispatcher.
#pragma once

#include <ATen/core/Tensor.h>

#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace torch_layerlr::optim {

struct Recipe {
  std::string filter = "none";   // none | grokfast | blend
  std::string decay = "coupled"; // coupled | decoupled | update
  std::string moment = "sgd";    // sgd | adam
  std::string trust = "none";    // none | lars | update
  double filter_lambda = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool bias_correction = true;
  double trust_coefficient = 1.0;
  double trust_eps = 0.0;
  double ratio_min = 0.0;
  double ratio_max = std::numeric_limits<double>::infinity();
  double norm_max = std::numeric_limits<double>::infinity();
  bool maximize = false;

  /// The per-parameter state buffers this recipe reads and writes, in the op's list order.
  std::vector<std::string> state_names() const;
  friend bool operator==(const Recipe& a, const Recipe& b) {
    return a.filter == b.filter && a.decay == b.decay && a.moment == b.moment && a.trust == b.trust &&
           a.filter_lambda == b.filter_lambda && a.momentum == b.momentum && a.dampening == b.dampening &&
           a.nesterov == b.nesterov && a.beta1 == b.beta1 && a.beta2 == b.beta2 && a.eps == b.eps &&
           a.bias_correction == b.bias_correction && a.trust_coefficient == b.trust_coefficient &&
           a.trust_eps == b.trust_eps && a.ratio_min == b.ratio_min && a.ratio_max == b.ratio_max &&
           a.norm_max == b.norm_max && a.maximize == b.maximize;
  }
};

/// The tensors of one engine call: same device, same dtype, state in one form (state_precision.h). The scales
/// are the int8 state's absmax, one list per state list (empty for the other forms).
struct StepTensors {
  std::vector<at::Tensor> params, grads, filters, exp_avgs, exp_avg_sqs, steps;
  std::string state_precision = "fp32";
  std::vector<at::Tensor> filter_scales, exp_avg_scales, exp_avg_sq_scales;
};

/// The per-tensor (1-D float64, one entry per tensor) and scalar inputs of one engine call.
struct StepInputs {
  at::Tensor lr, lr_mult, weight_decay, blend, trust_mask;
  std::optional<at::Tensor> filter_coef, trust_ratios;
};

/// layerlr::fused_step_ through the dispatcher: the same kernels the Python classes call (its `state` overload
/// for low-precision state, with the seed 0 of the stochastic rounding, as the Python classes).
void fused_step_(const StepTensors& tensors, const Recipe& recipe, const StepInputs& inputs);

/// layerlr::fused_step_check: every check fused_step_ makes, on metadata only, without running the step.
void fused_step_check(const StepTensors& tensors, const Recipe& recipe, const StepInputs& inputs);

/// layerlr::quantize_blockwise: float32 CPU values -> (uint8 codes of their shape, one float32 absmax per block),
/// with the map of first moments, buffers and filters (signed_map) or of second moments: the fused step's encoder.
std::tuple<at::Tensor, at::Tensor> quantize_blockwise(const at::Tensor& values, bool signed_map);

/// layerlr::dequantize_blockwise: the float32 values of uint8 CPU codes and their absmax (the fused step's decoder).
at::Tensor dequantize_blockwise(const at::Tensor& codes, const at::Tensor& absmax, bool signed_map);

/// layerlr::dals_phase_: advance the DALS loss-phase detector and write the phase's filter coefficients.
void dals_phase_(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                 double tau2, const std::vector<double>& phase_alpha, const std::vector<double>& phase_gate);

/// layerlr::dals_advance_: DALS's global state for one step, where its tensors are: unless found_inf is set, feed
/// loss (if given) to the phase detector, advance the clock [step, cycle, cycle length] and write the step's
/// schedule factor into scale (1 with schedule = false).
void dals_advance_(const at::Tensor& clock, const at::Tensor& scale, const at::Tensor& detector,
                   const at::Tensor& filter_coef, const std::optional<at::Tensor>& loss,
                   const std::optional<at::Tensor>& found_inf, const std::string& variant, bool schedule,
                   int64_t total_steps, double warmup_frac, int64_t restart_mult, double tau1, double tau2,
                   const std::vector<double>& phase_alpha, const std::vector<double>& phase_gate);

}  // namespace torch_layerlr::optim
