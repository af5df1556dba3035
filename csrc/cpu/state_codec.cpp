// The codec width of this process (NOTE: [codec dispatch] in state_codec.h).
#include "state_codec.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace layerlr::cpu {
namespace {

bool cpu_has_avx512() {
#ifdef LAYERLR_CODEC_AVX512
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool build_has_avx2() {
#ifdef LAYERLR_CODEC_AVX2
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

CodecIsa choose() {
  const char* cap = std::getenv("LAYERLR_CPU_CAPABILITY");
  CodecIsa limit = CodecIsa::kAvx512;
  if (cap != nullptr && *cap != '\0') {
    if (std::strcmp(cap, "default") == 0) {
      limit = CodecIsa::kScalar;
    } else if (std::strcmp(cap, "avx2") == 0) {
      limit = CodecIsa::kAvx2;
    } else {
      TORCH_CHECK_VALUE(std::strcmp(cap, "avx512") == 0,
                        "LAYERLR_CPU_CAPABILITY must be 'default', 'avx2' or 'avx512', got '", cap, "'");
    }
  }
  if (limit == CodecIsa::kAvx512 && cpu_has_avx512()) return CodecIsa::kAvx512;
  if (limit != CodecIsa::kScalar && build_has_avx2()) return CodecIsa::kAvx2;
  return CodecIsa::kScalar;
}

}  // namespace

CodecIsa codec_isa() {
  static const CodecIsa isa = choose();
  return isa;
}

}  // namespace layerlr::cpu
