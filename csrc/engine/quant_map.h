// The 8-bit codes of int8 state (NOTE: [state precision] in state_precision.h): decode by table, encode to the
// nearest code by the arithmetic of the map's decades.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "state_precision.h"

namespace layerlr {

// NOTE: [dynamic quantization map]
// The codes are bitsandbytes' dynamic data type (create_dynamic_map, after Dettmers 2016, "8-Bit Approximations
// for Parallelism in Deep Learning"): for each of 7 decades 10^-6 .. 10^0 the midpoints of an even split of
// [0.1, 1] into 2^i (signed) or 2^(i+1) (unsigned) parts, i = 0..6, plus 0 and 1; signed maps add the negated
// midpoints. So 256 values, dense near 0 and spanning seven decades of a block's absmax. The signed map (first
// moments, momentum buffers, filters) has no -1: a block whose absmax is a negative value stores it as -0.993,
// as in bitsandbytes. The unsigned map holds second moments. The values are computed in double and rounded
// once to float32.
//
// NOTE: [nearest code by arithmetic]
// Encoding picks the code nearest to x = value/absmax without a search or a table of thresholds. The magnitudes
// other than 0 and 1 form seven decades d = 0..6: decade d holds N_d = 2^d (signed) or 2^(d+1) (unsigned) evenly
// spaced values 10^(d-6) (0.1 + 0.9 (k + 1/2) / N_d), k = 0..N_d-1, so the midpoints between neighbours inside
// a decade are its even split 10^(d-6) (0.1 + 0.9 (k + 1) / N_d), and inside a decade the nearest value is
// k = floor(t), t = a N_d / (0.9 10^(d-6)) - N_d / 9 for a = |x|. The midpoints between decades (and those
// between 0 and the first value, between the last value and 1) are off the splits; they cut [0, inf) into nine
// regions: r = 0 (nearest magnitude 0), r = 1..7 (decade r-1, from the midpoint under its first value), r = 8
// (nearest magnitude 1, above the midpoint between the last value and 1). So:
//   1. the region: the one holding the start of a's binade (a table over the float's exponent), plus one where a
//      lies above the next region's start (a binade holds at most one, as they are 9.7 or more apart);
//   2. the magnitude index j = trunc(min(a * scale[r] - offset[r], last[r])): one fused multiply-add, with the
//      index of the region's first value folded into offset and last (regions 0 and 8 have scale 0 and give
//      their one index). Below a decade's start t > -1, so trunc is floor; between a decade's start and the
//      midpoint under its first value t >= N_d - 1 in the decade before, so the clamp gives that one's last.
// Scales, offsets and region starts are computed in double and rounded once to float32. The multiply-add rounds
// once, at a place of at most 2^-15 of a unit of k, so a value within about 2e-6 (relative) of a midpoint may
// take either neighbour; build_quant_map checks every value of the map and both sides of every midpoint at that
// distance. NaN and +-inf take the code of +1: NaN is above every region start (unordered compares), and
// min(NaN, last) is last. The scalar, AVX2, AVX-512 and CUDA encoders run these float operations, so they agree
// bit for bit.
constexpr int kBinadeLo = 127 - 25;  // biased float32 exponent of binade 0, 2^-25: below every region start
constexpr int kBinades = 32;         // binade b: [2^(b-25), 2^(b-24)); binades 0 and 31 take all below / above
constexpr int kDecades = 7;
constexpr int kRegions = kDecades + 2;

struct QuantMap {
  float value[256];                 // code -> value in [-1, 1]
  int32_t binade_region[kBinades];  // region of the binade's start
  float binade_next[kBinades];      // start of the region after that one (inf after region 8)
  float region_start[8];            // start of region r + 1: above it a is in region r + 1 or later
  // per region (16 entries, so that a table fills one 16-lane register; entries 9.. repeat entry 8):
  float scale[16], offset[16], last[16];
};

C10_HOST_DEVICE inline int32_t binade_of(float a) {
  const int32_t e = static_cast<int32_t>(float_bits(a) >> 23) - kBinadeLo;
  return e < 0 ? 0 : (e >= kBinades ? kBinades - 1 : e);
}

// The two maps, built once on the host (quant_map.cpp).
const QuantMap& quant_map(bool is_signed);

C10_HOST_DEVICE inline float quant_decode(const QuantMap& q, uint8_t code) { return q.value[code]; }

// The magnitude index of the value nearest a = |x| (NOTE: [nearest code by arithmetic]): 0 is zero, 128 (signed)
// or 255 (unsigned) is one.
C10_HOST_DEVICE inline int32_t quant_magnitude(const QuantMap& q, float a) {
  const int32_t b = binade_of(a);
  const int32_t r = q.binade_region[b] + (a <= q.binade_next[b] ? 0 : 1);
  const float t = fmaf(a, q.scale[r], -q.offset[r]);
  return static_cast<int32_t>(t < q.last[r] ? t : q.last[r]);
}

// The codes of magnitude j: signed maps put it at code 127 + j and its negation at 127 - j (no -1: j is clamped
// to 127); the unsigned map puts it at code j, and every negative value at 0's code.
constexpr int kSignedZeroCode = 127;

C10_HOST_DEVICE inline uint8_t quant_encode(bool is_signed, const QuantMap& q, float x) {
  const int32_t j = quant_magnitude(q, std::fabs(x));
  if (is_signed) return static_cast<uint8_t>(x < 0.0f ? kSignedZeroCode - (j < kSignedZeroCode ? j : kSignedZeroCode)
                                                      : kSignedZeroCode + j);
  return static_cast<uint8_t>(x < 0.0f ? 0 : j);
}

// A block's scale: 1/absmax, or 0 for an all-zero block (every element then encodes to 0).
C10_HOST_DEVICE inline float quant_inverse_scale(float absmax) { return absmax > 0.0f ? 1.0f / absmax : 0.0f; }

}  // namespace layerlr
