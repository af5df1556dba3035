// Decoding and encoding one block of low-precision state between its stored form and float32 buffers on the CPU
// (NOTE: [state precision] in engine/state_precision.h), dispatched to the widest vector code the CPU runs.
#pragma once

#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../engine/quant_map.h"
#include "../engine/state_precision.h"
#include "state_codec_avx2.h"
#include "state_codec_avx512.h"

namespace layerlr::cpu {

// NOTE: [codec dispatch]
// The codecs run as AVX-512 (16 lanes, compiled with a target attribute, so a build for AVX2 machines carries it
// too), AVX2 (8 lanes, when the build targets AVX2: NOTE: [CPU vector width] in setup.py) or scalar code, the
// widest the CPU supports; LAYERLR_CPU_CAPABILITY=default|avx2|avx512 caps the choice (as ATen's
// ATEN_CPU_CAPABILITY does), which is how the tests run every width on one machine. Every width gives the scalar
// functions' result bit for bit: the vector loops only reorder independent per-element work, run the same float
// operations (NOTE: [nearest code by arithmetic]), and reduce the absmax with an order-free max.
enum class CodecIsa { kScalar, kAvx2, kAvx512 };

// Chosen once per process (state_codec.cpp).
CodecIsa codec_isa();

inline void decode_bf16(const uint16_t* in, int64_t len, float* out) {
  int64_t i = 0;
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512) i = avx512::decode_bf16(in, len, out);
  if (isa == CodecIsa::kAvx2) i = avx2::decode_bf16(in, len, out);
  for (; i < len; ++i) out[i] = bf16_bits_to_float(in[i]);
}

// Elements [begin, begin + len) of a tensor's stream `key` (NOTE: [stochastic rounding]).
inline void encode_bf16(const float* in, int64_t len, uint64_t key, int64_t begin, uint16_t* out) {
  int64_t i = 0;
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512) i = avx512::encode_bf16(in, len, key, begin, out);
  if (isa == CodecIsa::kAvx2) i = avx2::encode_bf16(in, len, key, begin, out);
  for (; i < len; ++i) out[i] = bf16_round_stochastic(in[i], rounding_bits(key, begin + i));
}

inline void decode_int8(const QuantMap& q, const uint8_t* in, float scale, int64_t len, float* out) {
  int64_t i = 0;
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512) i = avx512::decode_int8(q, in, scale, len, out);
  if (isa == CodecIsa::kAvx2) i = avx2::decode_int8(q, in, scale, len, out);
  for (; i < len; ++i) out[i] = quant_decode(q, in[i]) * scale;
}

// The largest |x| of a block, NaN if the block holds a NaN (then every value of the block decodes to NaN, as
// NaN state would stay NaN at full precision).
inline float block_absmax(const float* x, int64_t len) {
  AbsMax m;
  int64_t i = 0;
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512) i = avx512::block_absmax(x, len, m);
  if (isa == CodecIsa::kAvx2) i = avx2::block_absmax(x, len, m);
  for (; i < len; ++i) m.add(x[i]);
  return m.value();
}

// Codes of x * inv (NOTE: [nearest code by arithmetic]).
inline void encode_int8(const QuantMap& q, bool is_signed, const float* x, float inv, int64_t len, uint8_t* out) {
  int64_t i = 0;
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512) i = avx512::encode_int8(q, is_signed, x, inv, len, out);
  if (isa == CodecIsa::kAvx2) i = avx2::encode_int8(q, is_signed, x, inv, len, out);
  for (; i < len; ++i) out[i] = quant_encode(is_signed, q, x[i] * inv);
}

}  // namespace layerlr::cpu
