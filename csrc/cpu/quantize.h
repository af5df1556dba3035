// Whole-tensor int8 quantization with the engine's map (quantize.cpp; the ops quantize_blockwise and
// dequantize_blockwise).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace layerlr::cpu {

// float32 values (any shape) -> (uint8 codes of the same shape, float32 absmax per kQuantBlock elements).
std::tuple<at::Tensor, at::Tensor> quantize_blockwise(const at::Tensor& values, bool is_signed);

// The float32 values of codes and their absmax.
at::Tensor dequantize_blockwise(const at::Tensor& codes, const at::Tensor& absmax, bool is_signed);

}  // namespace layerlr::cpu
