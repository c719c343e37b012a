#!/usr/bin/env bash
# Runs benchmarks/reference_torch.py (the PyTorch reference attacks on the paper authors' models) in a throwaway
# venv, on the benchmark images written by the project's own data loader, so that its times sit beside the JAX
# attacks' (benchmarks/attack_speed.py) on the same machine.
#
#   bash benchmarks/side_by_side.sh --check                      # the models against reference_outputs.npz
#   bash benchmarks/side_by_side.sh --workload pgd               # attack_speed.py's workload (500 images)
#   bash benchmarks/side_by_side.sh --workload square            # Square, 100 images, ε = 0.1, 5000 queries
#   bash benchmarks/side_by_side.sh --workload autoattack [--gradient bpda]
#
# Every argument goes to reference_torch.py (its --help lists them). Environment:
#   REF_VENV        the venv (default /tmp/vqdefense_ref_venv), built on first use: torch 2.13.0, numpy, scipy,
#                   torchattacks 3.5.1, and AutoAttack (fra31/auto-attack, not on PyPI); delete it to rebuild
#   AUTOATTACK_SRC  AutoAttack's source: a directory or a git repository (bare or not); default: a clone of
#                   https://github.com/fra31/auto-attack
#   TORCH_WHEEL     a local torch 2.13.0 wheel to install instead of PyPI's (default: the CPU wheel in /opt/wheels
#                   when it is there)
#   REF_IMAGES      the benchmark images' .npz (default /tmp/vqdefense_ref_images_N.npz, N = max(500, --num-images)),
#                   written when missing with the project's venv (.venv; `make install` if there is none): the first
#                   N MNIST test images at 24×24, as the project's data loader gives them (it fetches MNIST once)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REF_VENV:-/tmp/vqdefense_ref_venv}"
STAMP="$VENV/.vqdefense_ref_installed"   # holds AutoAttack's commit once the venv is complete
TORCH_WHEEL="${TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}"
AUTOATTACK_URL="https://github.com/fra31/auto-attack"

log() { echo "side_by_side: $*" >&2; }

build_venv() {
  if [[ -e "$VENV" && ! -f "$VENV/.vqdefense_ref_partial" ]]; then
    log "$VENV exists but this script did not build it: delete it or set REF_VENV to another path"
    exit 1
  fi
  log "building $VENV"
  rm -rf "$VENV"  # only a build of ours that did not finish
  python3 -m venv "$VENV"
  touch "$VENV/.vqdefense_ref_partial"
  local pip=("$VENV/bin/python" -m pip install --quiet)
  if [[ -f "$TORCH_WHEEL" ]]; then
    "${pip[@]}" "$TORCH_WHEEL"
  else
    "${pip[@]}" "torch==2.13.0"
  fi
  # torchattacks declares torchvision (and requests, tqdm) but imports none of them at 3.5.1, only scipy; and
  # PyPI's torchvision wheel does not load beside the CPU-only torch ("operator torchvision::nms does not
  # exist"). So: its real dependencies, then torchattacks itself without its declared ones.
  "${pip[@]}" numpy scipy
  "${pip[@]}" --no-deps "torchattacks==3.5.1"

  # AutoAttack: its setup.py declares no dependencies (it needs torch and numpy, installed above).
  local src="${AUTOATTACK_SRC:-$AUTOATTACK_URL}" tmp rev
  tmp="$(mktemp -d)"
  if [[ -d "$src" && "$(git -C "$src" rev-parse --is-bare-repository 2>/dev/null)" != "true" ]]; then
    # A work tree or a plain directory: install it as it is, local changes included.
    rev="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo "directory $src")"
    cp -r "$src" "$tmp/auto-attack"
  else
    # A bare repository or a URL: check out HEAD, leaving out autoattack/examples (model files that partial
    # mirrors lack and nothing imports).
    git clone --quiet --no-checkout "$src" "$tmp/auto-attack"
    git -C "$tmp/auto-attack" checkout --quiet HEAD -- . ':(exclude)autoattack/examples'
    rev="$(git -C "$tmp/auto-attack" rev-parse HEAD)"
  fi
  rm -rf "$tmp/auto-attack/build"  # a stale build/ in the source would be installed instead
  "${pip[@]}" --no-deps "$tmp/auto-attack"
  rm -rf "$tmp"
  "$VENV/bin/python" -c "import torch, numpy, scipy, torchattacks, autoattack, autoattack.square" \
    || { log "the venv does not import what reference_torch.py needs"; exit 1; }
  echo "$rev" > "$STAMP"
  rm -f "$VENV/.vqdefense_ref_partial"
  log "built $VENV: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'), AutoAttack $rev"
}

[[ -f "$STAMP" ]] || build_venv

# Whether the arguments ask only for --check, and how many images they need.
check_only=0
num_images=500
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --check) check_only=1 ;;
    --num-images) num_images="${args[i + 1]:-500}" ;;
    --num-images=*) num_images="${args[i]#--num-images=}" ;;
  esac
done
(( num_images >= 500 )) || num_images=500  # one file serves every workload's default

extra=()
if (( ! check_only )); then
  images="${REF_IMAGES:-/tmp/vqdefense_ref_images_${num_images}.npz}"
  if [[ ! -f "$images" ]]; then
    py="$ROOT/.venv/bin/python"
    if [[ ! -d "$ROOT/.venv" ]]; then
      log "no project venv: running make install"
      make -C "$ROOT" install
    fi
    waited=0
    until [[ -f "$ROOT/.venv/.installed" ]]; do  # a `make install` may still be running
      if (( waited == 0 )); then log "waiting for the project's venv ($ROOT/.venv/.installed; run make install)"; fi
      if (( waited >= 1800 )); then log "no $ROOT/.venv/.installed after 30 minutes; run make install"; exit 1; fi
      sleep 10
      waited=$((waited + 10))
    done
    log "writing the first $num_images MNIST test images (24×24) to $images with the project's data loader"
    (cd "$ROOT" && "$py" - "$images" "$num_images" <<'EOF'
import os, sys
import numpy as np
from vqdefense_jax.core import config as config_lib, data as data_lib

path, n = sys.argv[1], int(sys.argv[2])
c = config_lib.load("configs/purify/authors.py")  # the authors' 24×24 set-up; fetches MNIST once if missing
c.data.test_subset = n
c.data.train_subset = 1  # the training split is not used
ds = data_lib.load_dataset(data_lib.DataSpec.from_config(c.data))
tmp = path + ".tmp.npz"
np.savez(tmp, images=ds.test_images[..., 0].astype(np.float32), labels=ds.test_labels.astype(np.int64))
os.replace(tmp, path)
EOF
    )
  fi
  extra=(--images "$images")
fi

AUTOATTACK_REV="$(cat "$STAMP")" exec "$VENV/bin/python" "$ROOT/benchmarks/reference_torch.py" "${extra[@]}" "$@"
