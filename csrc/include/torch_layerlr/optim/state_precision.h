// The forms of low-precision optimizer state in the C++ API, as the Python classes keep them
// (torch_layerlr/optim/_state_precision.py; NOTE: [state precision] in csrc/engine/state_precision.h):
//   "fp32": a tensor in the param's dtype (the kernels' full-precision state, as torch::optim keeps it)
//   "bf16": a bfloat16 tensor, written by the engine with stochastic rounding
//   "int8": uint8 codes and `<name>_absmax`, one float32 absmax per block of kQuantBlock elements
// Tensors of fewer than kInt8MinNumel elements keep "fp32" state under "int8": their state is small, and
// quantizing it costs accuracy (bitsandbytes' min_8bit_size).
// A buffer converts from one form to another through its float32 values (convert_state), as the Python classes
// convert a checkpoint of another precision.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>

namespace torch_layerlr::optim {

constexpr int64_t kQuantBlock = 256;
constexpr int64_t kInt8MinNumel = 4096;

/// Raise c10::ValueError naming state_precision unless `precision` is "fp32", "bf16" or "int8".
void check_state_precision(const std::string& precision);

/// The form of `param`'s state under its group's state_precision.
std::string tensor_precision(const std::string& group_precision, const at::Tensor& param);

/// A zero state buffer for `param` in the form `precision` ("int8": the codes; absmax from new_absmax).
at::Tensor new_state_buffer(const at::Tensor& param, const std::string& precision);
at::Tensor new_absmax(const at::Tensor& param);

/// Raise c10::Error naming buffer `name` of param `param` of group `group` unless `buffer` (and `absmax`, which
/// only "int8" state has) can be the state of `param_tensor` in the form `precision`: dtype, shape and device as the
/// engine takes them. The absmax values are read when `check_values` (a loaded archive: a crafted one may hold
/// negative or non-finite scales). Every step checks its state with it, so the name is only formatted on failure.
void check_state_form(size_t group, size_t param, const std::string& name, const at::Tensor& buffer,
                      const at::Tensor& absmax, const at::Tensor& param_tensor, const std::string& precision,
                      bool check_values);

/// State buffer `name` of `param`, kept in the form `from` (`absmax`: its absmax when "int8", else undefined), in
/// the form `to`: (buffer, absmax; undefined unless `to` is "int8"), on the param's device. The float32 values
/// (int8 decoded by the engine's dequantize_blockwise) become the param's dtype ("fp32"), bfloat16 rounded to
/// nearest ("bf16") or the engine's quantize_blockwise codes ("int8", on the CPU), the map signed except for
/// exp_avg_sq: the Python classes' to_float / from_float, so a C++ and a Python load agree bit for bit. `buffer`
/// must have passed check_state_form in the form `from`.
std::pair<at::Tensor, at::Tensor> convert_state(const std::string& name, const at::Tensor& buffer,
                                                const at::Tensor& absmax, const at::Tensor& param,
                                                const std::string& from, const std::string& to);

}  // namespace torch_layerlr::optim
