// Blockwise int8 quantization of whole tensors on the CPU: the engine's codecs (state_codec.h) over every block,
// for converting optimizer state between precisions (a checkpoint of one precision loaded into an optimizer of
// another), so that conversion and the fused step share one map and one encoder.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <tuple>

#include "../engine/quant_map.h"
#include "../engine/state_precision.h"
#include "quantize.h"
#include "state_codec.h"

namespace layerlr::cpu {
namespace {

// Blocks per task: enough work to pay for a task.
constexpr int64_t kBlocksPerTask = 64;

void check_cpu_strided(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.defined(), name, " is undefined");
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.layout() == at::kStrided, name, " must be a strided CPU tensor, got ",
                    t.device(), " ", t.layout());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> quantize_blockwise(const at::Tensor& values, bool is_signed) {
  check_cpu_strided(values, "values", at::kFloat);
  const at::Tensor x = values.contiguous();
  const int64_t n = x.numel();
  at::Tensor codes = at::empty(x.sizes(), x.options().dtype(at::kByte));
  at::Tensor absmax = at::empty({quant_blocks(n)}, x.options());
  const float* in = x.const_data_ptr<float>();
  uint8_t* out = codes.mutable_data_ptr<uint8_t>();
  float* scale = absmax.mutable_data_ptr<float>();
  const QuantMap& q = quant_map(is_signed);
  at::parallel_for(0, quant_blocks(n), kBlocksPerTask, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kQuantBlock, len = std::min(kQuantBlock, n - begin);
      scale[b] = block_absmax(in + begin, len);
      encode_int8(q, is_signed, in + begin, quant_inverse_scale(scale[b]), len, out + begin);
    }
  });
  return {codes, absmax};
}

at::Tensor dequantize_blockwise(const at::Tensor& codes, const at::Tensor& absmax, bool is_signed) {
  check_cpu_strided(codes, "codes", at::kByte);
  check_cpu_strided(absmax, "absmax", at::kFloat);
  const int64_t n = codes.numel();
  TORCH_CHECK_VALUE(absmax.dim() == 1 && absmax.numel() == quant_blocks(n), "absmax must hold one value per ",
                    kQuantBlock, " codes: ", quant_blocks(n), " for ", n, " codes, got shape ", absmax.sizes());
  const at::Tensor c = codes.contiguous(), s = absmax.contiguous();
  at::Tensor values = at::empty(c.sizes(), s.options());
  const uint8_t* in = c.const_data_ptr<uint8_t>();
  const float* scale = s.const_data_ptr<float>();
  float* out = values.mutable_data_ptr<float>();
  const QuantMap& q = quant_map(is_signed);
  at::parallel_for(0, quant_blocks(n), kBlocksPerTask, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kQuantBlock;
      decode_int8(q, in + begin, scale[b], std::min(kQuantBlock, n - begin), out + begin);
    }
  });
  return values;
}

}  // namespace layerlr::cpu
