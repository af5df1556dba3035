// The 8-bit codes of int8 state (NOTE: [state precision] in state_precision.h): decode by table, encode to the
// nearest code by a table over the float's bits and one comparison.
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
// NOTE: [nearest code by table]
// Encoding picks the code nearest to x = value/absmax, the upper one where x lies above the float32 midpoint
// mid[j] of two neighbours. A binary search over 256 values costs eight dependent compares per element; instead
// the top bits of |x| (its exponent and kBucketBits mantissa bits) index a table holding the largest magnitude
// j at or below the bucket's start, and one compare against mid[j] finishes, because the map is never denser
// than a bucket (build_quant_map checks that no bucket holds two midpoints). Buckets cover [2^-25, 2): anything
// smaller is in bucket 0 (nearest code 0), anything larger (and NaN) in the last. So that one table load serves
// both, each bucket's entry is the float32 bits of the midpoint above its j with the low 8 mantissa bits
// replaced by j, and x goes up where it exceeds that float: a threshold within 2^-15 (relative) of the
// midpoint, far inside the map's spacing of at least 0.7%. The last midpoint is +inf; with j in its low bits it
// reads as NaN, which no x exceeds.
constexpr int kBucketBits = 8;
constexpr int kBucketExpLo = 127 - 25;  // biased float32 exponent of the first bucket
constexpr int kBuckets = (127 - kBucketExpLo + 1) << kBucketBits;

struct QuantMap {
  float value[256];          // code -> value in [-1, 1]
  float mid[256];            // truncated midpoint between magnitudes j and j+1 (inf after the last)
  uint8_t pos_code[256];     // the code of magnitude j for x >= 0
  uint8_t neg_code[256];     // ... for x < 0 (the nearest negative code; 0's code in the unsigned map)
  uint32_t bucket[kBuckets]; // per bucket of |x|: j = the largest magnitude index at or below its start, in the
                             // low 8 bits of mid[j]'s bits
};

C10_HOST_DEVICE inline uint32_t bucket_of(float a) {
  int32_t b = static_cast<int32_t>(float_bits(a) >> (23 - kBucketBits)) - (kBucketExpLo << kBucketBits);
  return static_cast<uint32_t>(b < 0 ? 0 : (b >= kBuckets ? kBuckets - 1 : b));
}

// The two maps, built once on the host (quant_map.cpp).
const QuantMap& quant_map(bool is_signed);

C10_HOST_DEVICE inline float quant_decode(const QuantMap& q, uint8_t code) { return q.value[code]; }

C10_HOST_DEVICE inline uint8_t quant_encode(const QuantMap& q, float x) {
  const float a = std::fabs(x);
  const uint32_t entry = q.bucket[bucket_of(a)];
  int j = static_cast<int>(entry & 0xFFu);
  j += a > bits_float(entry) ? 1 : 0;
  return x < 0.0f ? q.neg_code[j] : q.pos_code[j];
}

// The codes as arithmetic (build_quant_map checks that the tables say the same): signed maps put magnitude j at
// code 127 + j and -j at 127 - j (no -1: j is clamped to 127); the unsigned map puts j at code j.
constexpr int kSignedZeroCode = 127;

// A block's scale: 1/absmax, or 0 for an all-zero block (every element then encodes to 0).
C10_HOST_DEVICE inline float quant_inverse_scale(float absmax) { return absmax > 0.0f ? 1.0f / absmax : 0.0f; }

}  // namespace layerlr
