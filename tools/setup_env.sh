#!/usr/bin/env bash
# Create (or refresh) the project environment in .venv at the repo root.
#
# This is the one place that knows how d2pose's dependencies are installed:
#   1. a virtualenv with torch + torchvision (pip's constraint file may cap their versions),
#   2. detectron2: the official source when reachable, otherwise the PyPI redistribution
#      `sal-detectron2==0.7.2` whose pure-Python package is put on the venv's path without its
#      `_C` (rotated boxes / deformable conv are unavailable; d2pose needs neither),
#   3. the remaining runtime and test dependencies (requirements.txt),
#   4. d2pose itself in editable mode, compiling `d2pose._C`.
# It is idempotent: each step leaves a stamp keyed by a hash of its inputs and is skipped when
# nothing changed; `d2pose._C` is rebuilt incrementally when the C++/CUDA sources change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${D2POSE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
D2_GIT="git+https://github.com/facebookresearch/detectron2.git"
D2_WHEEL="sal-detectron2==0.7.2"
STAMPS="$VENV/.d2pose-stamps"

log() { printf '[setup] %s\n' "$*" >&2; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

# 1. torch ---------------------------------------------------------------------------------
key="$(echo "$TORCH_SPEC" | sha256sum | cut -c1-16)"
if ! stamp_ok torch "$key"; then
  log "installing $TORCH_SPEC (served from local disk when available)"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_SPEC
  stamp_set torch "$key"
fi

# 2. detectron2 ----------------------------------------------------------------------------
if ! stamp_ok detectron2 "v1" || ! "$VPY" -c "import detectron2" 2>/dev/null; then
  # runtime deps of detectron2 (pkg_resources needs setuptools<81)
  "${PIP[@]}" "setuptools>=70,<81" wheel Cython fvcore iopath pycocotools "omegaconf>=2.1,<2.4" \
    hydra-core yacs tabulate termcolor cloudpickle matplotlib tensorboard tqdm packaging Pillow
  if timeout 20 git ls-remote "${D2_GIT#git+}" HEAD >/dev/null 2>&1; then
    log "installing detectron2 from the official source"
    "${PIP[@]}" --no-build-isolation "$D2_GIT"
  else
    log "official detectron2 source unreachable; using PyPI redistribution $D2_WHEEL (no _C)"
    tmp="$(mktemp -d)"
    "$VPY" -m pip install --disable-pip-version-check -q --no-deps --only-binary=:all: \
      --python-version 3.10 --target "$tmp" "$D2_WHEEL"
    site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    dest="$VENV/detectron2-src"
    rm -rf "$dest"; mkdir -p "$dest"
    # only the detectron2 package: the wheel also ships a top-level `tools` that would shadow ours
    cp -r "$tmp/detectron2" "$dest/"
    echo "$dest" > "$site/detectron2-redist.pth"
    rm -rf "$tmp"
  fi
  "$VPY" -c "import detectron2; print('[setup] detectron2', detectron2.__version__)"
  stamp_set detectron2 "v1"
fi

# 3. other dependencies --------------------------------------------------------------------
key="$(hash_of "$ROOT/requirements.txt")"
if ! stamp_ok requirements "$key"; then
  log "installing requirements.txt"
  "${PIP[@]}" -r "$ROOT/requirements.txt"
  # xtcocotools' wheels target numpy 1; build it from source against the installed numpy
  "${PIP[@]}" --no-build-isolation --no-binary xtcocotools xtcocotools
  stamp_set requirements "$key"
fi

# 4. d2pose (editable) and its compiled op --------------------------------------------------
# A plain `pip install -e .`, as users run it (pip's build isolation on): d2pose's build backend
# (tools/build/d2pose_build_backend.py) compiles d2pose._C against this venv's torch. Afterwards the
# torch release recorded in d2pose._C must be the running one (else: rebuild).
CHECK_C='import torch, d2pose._C as c
from d2pose.layers.ms_deform_attn import check_build
err = check_build(c)
if err: raise SystemExit(err)
print("[setup] d2pose._C compiled against torch", c.torch_version(), "(running", torch.__version__ + ")")'
install_key="$(cd "$ROOT" && hash_of setup.py pyproject.toml tools/build/d2pose_build_backend.py)"
csrc_key="$(cd "$ROOT" && hash_of $(find d2pose/layers/csrc -type f | sort))"
if ! "$VPY" -m pip show -q d2pose >/dev/null 2>&1 || ! stamp_ok d2pose-install "$install_key"; then
  # first install, or the packaging changed (packages, package data, build): install again
  log "installing d2pose in editable mode (compiles d2pose._C)"
  (cd "$ROOT" && MAX_JOBS="${MAX_JOBS:-2}" "$VPY" -m pip install --disable-pip-version-check -q --no-deps -e .)
  stamp_set d2pose-install "$install_key"
  stamp_set d2pose "$csrc_key"
elif ! stamp_ok d2pose "$csrc_key" || ! "$VPY" -c "$CHECK_C" >/dev/null 2>&1; then
  log "rebuilding d2pose._C (sources changed, or built for another torch)"
  (cd "$ROOT" && MAX_JOBS="${MAX_JOBS:-2}" "$VPY" setup.py -q build_ext --inplace)
  stamp_set d2pose "$csrc_key"
fi
"$VPY" -c "$CHECK_C"
"$VPY" -c "import d2pose; print('[setup] d2pose', d2pose.__version__, 'ready')"
