// Decoding and encoding one block of low-precision state between its stored form and float32 buffers on the CPU
// (NOTE: [state precision] in engine/state_precision.h). With AVX2 (NOTE: [CPU vector width] in setup.py) eight
// elements at a time: table lookups as gathers from the maps of quant_map.h (1 KB of values, 26 KB of buckets:
// L1-resident), the bf16 hash in 32-bit lanes. Either way the result is the scalar functions' bit for bit:
// the vector loops only reorder independent per-element work.
#pragma once

#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(CPU_CAPABILITY_AVX2) && defined(__AVX2__)
#include <immintrin.h>
#define LAYERLR_CODEC_AVX2 1
#endif

#include "../engine/quant_map.h"
#include "../engine/state_precision.h"

namespace layerlr::cpu {

inline void decode_bf16(const uint16_t* in, int64_t len, float* out) {
  int64_t i = 0;
#ifdef LAYERLR_CODEC_AVX2
  for (; i + 8 <= len; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
#endif
  for (; i < len; ++i) out[i] = bf16_bits_to_float(in[i]);
}

// Elements [begin, begin + len) of a tensor's stream `key` (NOTE: [stochastic rounding]).
inline void encode_bf16(const float* in, int64_t len, uint64_t key, int64_t begin, uint16_t* out) {
  int64_t i = 0;
#ifdef LAYERLR_CODEC_AVX2
  const __m256i key_lo = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key)));
  const __m256i key_hi = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key >> 32)));
  const __m256i golden = _mm256_set1_epi32(static_cast<int32_t>(kGolden32));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m1 = _mm256_set1_epi32(0x7FEB352D), m2 = _mm256_set1_epi32(static_cast<int32_t>(0x846CA68Bu));
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i quiet = _mm256_set1_epi32(0x00400000);
  for (; i + 8 <= len; i += 8) {
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(begin + i)), lanes);
    __m256i h = _mm256_add_epi32(key_lo, _mm256_mullo_epi32(idx, golden));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, m1);
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
    h = _mm256_mullo_epi32(h, m2);
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    const __m256i r = _mm256_srli_epi32(_mm256_xor_si256(h, key_hi), 16);
    const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(in + i));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i rounded = _mm256_add_epi32(u, r);
    // NaN: its own top bits, made quiet (bf16_round_stochastic)
    const __m256i bits = _mm256_srli_epi32(_mm256_blendv_epi8(rounded, _mm256_or_si256(u, quiet), nan), 16);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(bits, bits), 0b1000);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(packed));
  }
#endif
  for (; i < len; ++i) out[i] = bf16_round_stochastic(in[i], rounding_bits(key, begin + i));
}

inline void decode_int8(const QuantMap& q, const uint8_t* in, float scale, int64_t len, float* out) {
  int64_t i = 0;
#ifdef LAYERLR_CODEC_AVX2
  const __m256 s = _mm256_set1_ps(scale);
  for (; i + 8 <= len; i += 8) {
    const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(q.value, c, 4), s));
  }
#endif
  for (; i < len; ++i) out[i] = quant_decode(q, in[i]) * scale;
}

inline float block_absmax(const float* x, int64_t len) {
  float m = 0.0f;
  int64_t i = 0;
#ifdef LAYERLR_CODEC_AVX2
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vm = _mm256_setzero_ps();
  for (; i + 8 <= len; i += 8) vm = _mm256_max_ps(vm, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  for (float v : lanes) m = std::max(m, v);
#endif
  for (; i < len; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// Codes of x * inv (NOTE: [nearest code by table]); the codes follow the arithmetic of kSignedZeroCode.
inline void encode_int8(const QuantMap& q, bool is_signed, const float* x, float inv, int64_t len, uint8_t* out) {
  int64_t i = 0;
#ifdef LAYERLR_CODEC_AVX2
  const __m256 s = _mm256_set1_ps(inv);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i offset = _mm256_set1_epi32(kBucketExpLo << kBucketBits);
  const __m256i top = _mm256_set1_epi32(kBuckets - 1), zero = _mm256_setzero_si256();
  const __m256i byte = _mm256_set1_epi32(0xFF), zero_code = _mm256_set1_epi32(kSignedZeroCode);
  const auto* buckets = reinterpret_cast<const int*>(q.bucket);
  for (; i + 8 <= len; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s);
    const __m256 a = _mm256_and_ps(v, abs_mask);
    __m256i b = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(a), 23 - kBucketBits), offset);
    b = _mm256_min_epi32(_mm256_max_epi32(b, zero), top);
    const __m256i entry = _mm256_i32gather_epi32(buckets, b, 4);
    __m256i j = _mm256_and_si256(entry, byte);
    const __m256 above = _mm256_cmp_ps(a, _mm256_castsi256_ps(entry), _CMP_GT_OQ);
    j = _mm256_sub_epi32(j, _mm256_castps_si256(above));  // + 1 above the midpoint
    const __m256i negative = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
    __m256i code;
    if (is_signed) {
      const __m256i up = _mm256_add_epi32(zero_code, j);
      const __m256i down = _mm256_sub_epi32(zero_code, _mm256_min_epi32(j, zero_code));
      code = _mm256_blendv_epi8(up, down, negative);
    } else {
      code = _mm256_andnot_si256(negative, j);
    }
    const __m256i w = _mm256_packus_epi32(code, code);  // per 128-bit lane: codes 0-3 | 4-7, as 16 bits
    const __m256i c8 = _mm256_packus_epi16(w, w);
    const uint32_t lo = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm256_castsi256_si128(c8)));
    const uint32_t hi = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm256_extracti128_si256(c8, 1)));
    const uint64_t both = lo | (static_cast<uint64_t>(hi) << 32);
    std::memcpy(out + i, &both, sizeof(both));
  }
#endif
  for (; i < len; ++i) out[i] = quant_encode(q, x[i] * inv);
}

}  // namespace layerlr::cpu
