// The forms of low-precision state (torch_layerlr/optim/_state_precision.py in C++): which form a parameter's
// state takes, making it, and checking a form before the engine or a loaded archive relies on it.
#include "torch_layerlr/optim/state_precision.h"

#include <ATen/ATen.h>

#include <ostream>

namespace torch_layerlr::optim {

namespace {

int64_t blocks(int64_t numel) { return (numel + kQuantBlock - 1) / kQuantBlock; }

// "state of param i of group g: name", written only into an error message.
struct StateName {
  size_t group, param;
  const std::string& name;
};

std::ostream& operator<<(std::ostream& os, const StateName& s) {
  return os << "state of param " << s.param << " of group " << s.group << ": " << s.name;
}

}  // namespace

void check_state_precision(const std::string& precision) {
  TORCH_CHECK_VALUE(precision == "fp32" || precision == "bf16" || precision == "int8",
                    "state_precision must be one of ('fp32', 'bf16', 'int8'), got '", precision, "'");
}

std::string tensor_precision(const std::string& group_precision, const at::Tensor& param) {
  if (group_precision == "int8" && param.numel() < kInt8MinNumel) return "fp32";
  return group_precision;
}

at::Tensor new_state_buffer(const at::Tensor& param, const std::string& precision) {
  if (precision == "fp32") return at::zeros_like(param, at::MemoryFormat::Preserve);
  // all-zero codes with an all-zero absmax decode to 0
  const auto dtype = precision == "bf16" ? at::kBFloat16 : at::kByte;
  return at::zeros(param.sizes(), at::TensorOptions().dtype(dtype).device(param.device()));
}

at::Tensor new_absmax(const at::Tensor& param) {
  return at::zeros({blocks(param.numel())}, at::TensorOptions().dtype(at::kFloat).device(param.device()));
}

void check_state_form(size_t group, size_t param, const std::string& name, const at::Tensor& buffer,
                      const at::Tensor& absmax, const at::Tensor& param_tensor, const std::string& precision,
                      bool check_values) {
  const StateName where{group, param, name};
  TORCH_CHECK_VALUE(buffer.sizes() == param_tensor.sizes(), where, " has shape ", buffer.sizes(),
                    " but the param has ", param_tensor.sizes());
  if (precision == "fp32") {
    TORCH_CHECK_TYPE(buffer.is_floating_point(), where, " has dtype ", buffer.scalar_type(),
                     ", which cannot hold the state of a ", param_tensor.scalar_type(), " param");
  } else {
    const auto dtype = precision == "bf16" ? at::kBFloat16 : at::kByte;
    TORCH_CHECK_TYPE(buffer.scalar_type() == dtype, where, " has dtype ", buffer.scalar_type(),
                     ": state_precision '", precision, "' keeps ", dtype, " state");
  }
  if (precision != "int8") {
    TORCH_CHECK_VALUE(!absmax.defined(), where, "_absmax is present, but only int8 state has an absmax (this "
                      "param's state is ", precision, ")");
    return;
  }
  const int64_t n = blocks(param_tensor.numel());
  TORCH_CHECK_VALUE(absmax.defined(), where, "_absmax is missing: int8 state keeps one absmax per ", kQuantBlock,
                    " elements");
  TORCH_CHECK_TYPE(absmax.scalar_type() == at::kFloat && absmax.dim() == 1 && absmax.size(0) == n, where,
                   "_absmax must be a float32 tensor of shape (", n, ") (one absmax per ", kQuantBlock,
                   " elements of its param), got ", absmax.scalar_type(), " of shape ", absmax.sizes());
  if (check_values) {
    TORCH_CHECK_VALUE(at::logical_and(absmax >= 0, at::isfinite(absmax)).all().item<bool>(), where,
                      "_absmax holds a negative or non-finite absmax");
  }
}

}  // namespace torch_layerlr::optim
