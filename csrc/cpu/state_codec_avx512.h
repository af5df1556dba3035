// The AVX-512 loops of the state codecs (state_codec.h, NOTE: [codec dispatch]): sixteen elements at a time,
// compiled for x86-64 with GCC or Clang whatever the build's vector width, each function under a target
// attribute, and called only where the CPU has AVX-512 F/BW/VL/DQ. Each returns how many leading elements it
// did; the caller finishes the rest.
#pragma once

#include <cstdint>

#include "../engine/quant_map.h"
#include "../engine/state_precision.h"
#include "codec_absmax.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LAYERLR_CODEC_AVX512 1
#define LAYERLR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#endif

namespace layerlr::cpu::avx512 {

#ifdef LAYERLR_CODEC_AVX512

// NOTE: GCC 12 warns that the "undefined" pass-through operands inside its own AVX-512 intrinsics are used
// uninitialized when they are inlined under a target attribute (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

LAYERLR_AVX512 inline int64_t decode_bf16(const uint16_t* in, int64_t len, float* out) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)));
    _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  return i;
}

// NOTE: [stochastic rounding]: lowbias32 of the element's counter in 32-bit lanes.
LAYERLR_AVX512 inline int64_t encode_bf16(const float* in, int64_t len, uint64_t key, int64_t begin,
                                          uint16_t* out) {
  const __m512i key_lo = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key)));
  const __m512i key_hi = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key >> 32)));
  const __m512i golden = _mm512_set1_epi32(static_cast<int32_t>(kGolden32));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i m1 = _mm512_set1_epi32(0x7FEB352D), m2 = _mm512_set1_epi32(static_cast<int32_t>(0x846CA68Bu));
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
  const __m512i quiet = _mm512_set1_epi32(0x00400000);
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(begin + i)), lanes);
    __m512i h = _mm512_add_epi32(key_lo, _mm512_mullo_epi32(idx, golden));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    h = _mm512_mullo_epi32(h, m1);
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
    h = _mm512_mullo_epi32(h, m2);
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    const __m512i r = _mm512_srli_epi32(_mm512_xor_si512(h, key_hi), 16);
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(in + i));
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
    // NaN: its own top bits, made quiet (bf16_round_stochastic)
    const __m512i bits = _mm512_mask_or_epi32(_mm512_add_epi32(u, r), nan, u, quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16)));
  }
  return i;
}

LAYERLR_AVX512 inline int64_t decode_int8(const QuantMap& q, const uint8_t* in, float scale, int64_t len,
                                          float* out) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_i32gather_ps(c, q.value, 4), s));
  }
  return i;
}

LAYERLR_AVX512 inline int64_t block_absmax(const float* x, int64_t len, AbsMax& m) {
  __m512 vm = _mm512_setzero_ps();
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vm = _mm512_max_ps(_mm512_abs_ps(v), vm);  // a NaN first operand returns the second
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  m.add(_mm512_reduce_max_ps(vm));
  m.nan = m.nan || nan != 0;
  return i;
}

// NOTE: [nearest code by arithmetic], with the binade and region tables in registers.
LAYERLR_AVX512 inline int64_t encode_int8(const QuantMap& q, bool is_signed, const float* x, float inv,
                                          int64_t len, uint8_t* out) {
  const __m512 s = _mm512_set1_ps(inv);
  const __m512i region_lo = _mm512_loadu_si512(q.binade_region), region_hi = _mm512_loadu_si512(q.binade_region + 16);
  const __m512 next_lo = _mm512_loadu_ps(q.binade_next), next_hi = _mm512_loadu_ps(q.binade_next + 16);
  const __m512 scale = _mm512_loadu_ps(q.scale), offset = _mm512_loadu_ps(q.offset), last = _mm512_loadu_ps(q.last);
  const __m512i binade_lo = _mm512_set1_epi32(kBinadeLo), binade_top = _mm512_set1_epi32(kBinades - 1);
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  const __m512i zero_code = _mm512_set1_epi32(kSignedZeroCode), two_zero_codes = _mm512_set1_epi32(2 * kSignedZeroCode);
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), s);
    const __m512 a = _mm512_abs_ps(v);
    __m512i b = _mm512_sub_epi32(_mm512_srli_epi32(_mm512_castps_si512(a), 23), binade_lo);
    b = _mm512_min_epi32(_mm512_max_epi32(b, zero), binade_top);
    __m512i r = _mm512_permutex2var_epi32(region_lo, b, region_hi);
    r = _mm512_mask_add_epi32(r, _mm512_cmp_ps_mask(a, _mm512_permutex2var_ps(next_lo, b, next_hi), _CMP_NLE_UQ),
                              r, one);
    const __m512 t = _mm512_fmsub_ps(a, _mm512_permutexvar_ps(r, scale), _mm512_permutexvar_ps(r, offset));
    const __m512i j = _mm512_cvttps_epi32(_mm512_min_ps(t, _mm512_permutexvar_ps(r, last)));  // min(NaN, l) = l
    const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512i code;
    if (is_signed) {  // 127 + j, or 127 - min(j, 127) = max(254 - (127 + j), 0)
      code = _mm512_add_epi32(zero_code, j);
      code = _mm512_mask_sub_epi32(code, negative, two_zero_codes, code);
      code = _mm512_max_epi32(code, zero);
    } else {
      code = _mm512_maskz_mov_epi32(static_cast<__mmask16>(~negative), j);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(code));
  }
  return i;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else  // not x86-64 GCC/Clang: the caller's scalar loop does everything

inline int64_t decode_bf16(const uint16_t*, int64_t, float*) { return 0; }
inline int64_t encode_bf16(const float*, int64_t, uint64_t, int64_t, uint16_t*) { return 0; }
inline int64_t decode_int8(const QuantMap&, const uint8_t*, float, int64_t, float*) { return 0; }
inline int64_t block_absmax(const float*, int64_t, AbsMax&) { return 0; }
inline int64_t encode_int8(const QuantMap&, bool, const float*, float, int64_t, uint8_t*) { return 0; }

#endif

}  // namespace layerlr::cpu::avx512
