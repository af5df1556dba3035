// Declarations shared by every options class: archive round trip, equality, and the lr accessors LR schedulers
// use (torch::optim::OptimizerOptions::get_lr / set_lr).
#pragma once

#define TORCH_LAYERLR_OPTIONS_COMMON(Options)                                          \
 public:                                                                              \
  void serialize(torch::serialize::InputArchive& archive) override;                  \
  void serialize(torch::serialize::OutputArchive& archive) const override;           \
  friend bool operator==(const Options& lhs, const Options& rhs);                    \
  double get_lr() const override;                                                    \
  void set_lr(const double lr) override
