#!/usr/bin/env bash
# Proves the CUDA kernels of d2pose._C compile on this machine (FORCE_CUDA=1), even without a GPU:
# builds the extension into a scratch folder (the installed CPU build is left alone), then imports
# it and checks that the CUDA kernels are registered with the dispatcher.
#   tools/build_cuda_check.sh [OUT_DIR]     (TORCH_CUDA_ARCH_LIST defaults to 8.0)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0}" MAX_JOBS="${MAX_JOBS:-2}"
cd "$ROOT"
"$PY" setup.py -q build_ext --build-temp "$OUT/temp" --build-lib "$OUT/lib"
so="$(find "$OUT/lib" -name '_C*.so' | head -1)"
[[ -n "$so" ]] || { echo "no _C library was built under $OUT/lib" >&2; exit 1; }
"$PY" - "$so" <<'PY'
import sys
import torch

torch.ops.load_library(sys.argv[1])
for op in ("ms_deform_attn_forward", "ms_deform_attn_backward"):
    name = f"d2pose::{op}"
    for key in ("CPU", "CUDA"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
            raise SystemExit(f"{name} has no {key} kernel in {sys.argv[1]}")
print(f"CUDA build OK: {sys.argv[1]} registers CPU and CUDA kernels")
PY
