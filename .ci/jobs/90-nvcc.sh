#!/usr/bin/env bash
# CUDA sources must compile wherever nvcc exists, even with no GPU and a CPU-only torch.
set -euo pipefail
if ! command -v nvcc >/dev/null 2>&1; then
  echo "nvcc not found: CUDA compile check skipped"
  exit 0
fi
mapfile -t cu_files < <(find csrc -name '*.cu' | sort)
if [ "${#cu_files[@]}" -eq 0 ]; then
  echo "no CUDA sources under csrc/"
  exit 0
fi
includes=$(.venv/bin/python -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I" + p for p in include_paths()))')
py_include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
out=$(mktemp -d)
for f in "${cu_files[@]}"; do
  echo "nvcc (compile only): $f"
  nvcc -c -std=c++20 -O3 --expt-relaxed-constexpr -gencode arch=compute_80,code=sm_80 \
    -gencode arch=compute_90,code=sm_90 -DLAYERLR_WITH_CUDA=1 -Icsrc $includes -I"$py_include" \
    "$f" -o "$out/$(basename "$f").o"
done
echo "compiled ${#cu_files[@]} CUDA source(s)"
