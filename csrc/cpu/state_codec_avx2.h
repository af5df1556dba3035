// The AVX2 loops of the state codecs (state_codec.h, NOTE: [codec dispatch]): eight elements at a time, compiled
// when the build targets AVX2. Each returns how many leading elements it did; the caller finishes the rest.
#pragma once

#include <cstdint>
#include <cstring>

#include "../engine/quant_map.h"
#include "../engine/state_precision.h"
#include "codec_absmax.h"

#if defined(CPU_CAPABILITY_AVX2) && defined(__AVX2__)
#include <immintrin.h>
#define LAYERLR_CODEC_AVX2 1
#endif

namespace layerlr::cpu::avx2 {

#ifdef LAYERLR_CODEC_AVX2

inline int64_t decode_bf16(const uint16_t* in, int64_t len, float* out) {
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  return i;
}

// NOTE: [stochastic rounding]: lowbias32 of the element's counter in 32-bit lanes.
inline int64_t encode_bf16(const float* in, int64_t len, uint64_t key, int64_t begin, uint16_t* out) {
  const __m256i key_lo = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key)));
  const __m256i key_hi = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key >> 32)));
  const __m256i golden = _mm256_set1_epi32(static_cast<int32_t>(kGolden32));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m1 = _mm256_set1_epi32(0x7FEB352D), m2 = _mm256_set1_epi32(static_cast<int32_t>(0x846CA68Bu));
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i quiet = _mm256_set1_epi32(0x00400000);
  int64_t i = 0;
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
  return i;
}

inline int64_t decode_int8(const QuantMap& q, const uint8_t* in, float scale, int64_t len, float* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(q.value, c, 4), s));
  }
  return i;
}

inline int64_t block_absmax(const float* x, int64_t len, AbsMax& m) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vm = _mm256_setzero_ps(), vnan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vm = _mm256_max_ps(_mm256_and_ps(v, abs_mask), vm);  // a NaN first operand returns the second
    vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  for (float v : lanes) m.add(v);
  m.nan = m.nan || _mm256_movemask_ps(vnan) != 0;
  return i;
}

// NOTE: [nearest code by arithmetic]. The region is the count of region starts below a (the same as the scalar
// binade table's; NaN is above all of them, as it is there); region 8's one index replaces the rest at the end,
// so that the tables fit eight lanes.
inline int64_t encode_int8(const QuantMap& q, bool is_signed, const float* x, float inv, int64_t len,
                           uint8_t* out) {
  const __m256 s = _mm256_set1_ps(inv);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 starts[kRegions - 1];
  for (int r = 0; r + 1 < kRegions; ++r) starts[r] = _mm256_set1_ps(q.region_start[r]);
  const __m256 scale = _mm256_loadu_ps(q.scale), offset = _mm256_loadu_ps(q.offset), last = _mm256_loadu_ps(q.last);
  const __m256i one = _mm256_set1_epi32(static_cast<int32_t>(q.last[kRegions - 1]));
  const __m256i zero_code = _mm256_set1_epi32(kSignedZeroCode);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s);
    const __m256 a = _mm256_and_ps(v, abs_mask);
    __m256i r = _mm256_setzero_si256();
    for (int t = 0; t + 2 < kRegions; ++t)  // - (-1) where a lies above the start of region t + 1
      r = _mm256_sub_epi32(r, _mm256_castps_si256(_mm256_cmp_ps(a, starts[t], _CMP_NLE_UQ)));
    const __m256 tt = _mm256_fmsub_ps(a, _mm256_permutevar8x32_ps(scale, r), _mm256_permutevar8x32_ps(offset, r));
    __m256i j = _mm256_cvttps_epi32(_mm256_min_ps(tt, _mm256_permutevar8x32_ps(last, r)));  // min(NaN, l) = l
    const __m256 top = _mm256_cmp_ps(a, starts[kRegions - 2], _CMP_NLE_UQ);
    j = _mm256_blendv_epi8(j, one, _mm256_castps_si256(top));
    const __m256i negative = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
    __m256i code;
    if (is_signed) {
      const __m256i pos = _mm256_add_epi32(zero_code, j);
      const __m256i neg = _mm256_sub_epi32(zero_code, _mm256_min_epi32(j, zero_code));
      code = _mm256_blendv_epi8(pos, neg, negative);
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
  return i;
}

#else  // no AVX2 in this build: the caller's scalar loop does everything

inline int64_t decode_bf16(const uint16_t*, int64_t, float*) { return 0; }
inline int64_t encode_bf16(const float*, int64_t, uint64_t, int64_t, uint16_t*) { return 0; }
inline int64_t decode_int8(const QuantMap&, const uint8_t*, float, int64_t, float*) { return 0; }
inline int64_t block_absmax(const float*, int64_t, AbsMax&) { return 0; }
inline int64_t encode_int8(const QuantMap&, bool, const float*, float, int64_t, uint8_t*) { return 0; }

#endif

}  // namespace layerlr::cpu::avx2
