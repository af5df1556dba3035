// Converting a state buffer between the forms of state_precision.h (torch_layerlr/optim/_state_precision.py's
// to_float / from_float in C++): a loaded archive of another precision takes the optimizer's form. The int8 map
// and encoder are the engine's own ops, so a converted state is the one the Python classes make.
#include <ATen/ATen.h>

#include "torch_layerlr/optim/recipe.h"
#include "torch_layerlr/optim/state_precision.h"

namespace torch_layerlr::optim {

namespace {

// Second moments are non-negative and take the unsigned map (more codes for their range); every other buffer
// the signed one, as the fused step encodes them.
bool signed_map(const std::string& name) { return name != "exp_avg_sq"; }

// The float32 values of a buffer kept in the form `from`, on the buffer's device (int8 decodes on the CPU).
at::Tensor to_float(const std::string& name, const at::Tensor& buffer, const at::Tensor& absmax,
                    const std::string& from) {
  if (from != "int8") return buffer.to(at::kFloat);
  const at::Tensor values =
      dequantize_blockwise(buffer.cpu().contiguous(), absmax.cpu().contiguous(), signed_map(name));
  return values.to(buffer.device()).reshape(buffer.sizes());
}

}  // namespace

std::pair<at::Tensor, at::Tensor> convert_state(const std::string& name, const at::Tensor& buffer,
                                                const at::Tensor& absmax, const at::Tensor& param,
                                                const std::string& from, const std::string& to) {
  const at::Tensor values = to_float(name, buffer, absmax, from);
  if (to == "fp32") return {values.to(param.scalar_type()).reshape(param.sizes()).to(param.device()), {}};
  if (to == "bf16") return {values.to(at::kBFloat16).reshape(param.sizes()).contiguous().to(param.device()), {}};
  auto [codes, scales] = quantize_blockwise(values.cpu().contiguous(), signed_map(name));
  return {codes.reshape(param.sizes()).to(param.device()), scales.to(param.device())};
}

}  // namespace torch_layerlr::optim
