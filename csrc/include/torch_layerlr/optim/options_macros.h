// Declarations shared by every options class: the state_precision option, archive round trip, equality, and the
// lr accessors LR schedulers use (torch::optim::OptimizerOptions::get_lr / set_lr).
//
// state_precision: how a group's per-parameter state (momentum buffer, exp_avg, exp_avg_sq, the Grokfast/DALS
// filter) is kept, as the Python classes' keyword of that name (torch_layerlr/optim/state_precision.h):
//   "fp32" (default): in the param's dtype, as torch::optim does;
//   "bf16": bfloat16, updated in float32 and written back with stochastic rounding (half the bytes);
//   "int8": uint8 codes of bitsandbytes' dynamic map and one float32 absmax per 256 elements (about a quarter of
//           the bytes), for tensors of >= 4096 elements; smaller tensors keep "fp32" state.
// Step counters and params are never affected. The engine keeps low-precision state on the CPU only so far.
#pragma once

#define TORCH_LAYERLR_OPTIONS_COMMON(Options)                                          \
  TORCH_ARG(std::string, state_precision) = "fp32";                                   \
                                                                                      \
 public:                                                                              \
  void serialize(torch::serialize::InputArchive& archive) override;                  \
  void serialize(torch::serialize::OutputArchive& archive) const override;           \
  friend bool operator==(const Options& lhs, const Options& rhs);                    \
  double get_lr() const override;                                                    \
  void set_lr(const double lr) override
