#!/usr/bin/env bash
# The GPU loop in one go, from the repository root on a GPU node (about 10 minutes on an H100):
#   1. build servesim and servesim-calibrate with the `cuda` feature;
#   2. the kernel self-test (calibration kernels vs CPU references) and the CUDA backend's test
#      (its logits vs the CPU backend's on a tiny model: prefill, decode, a swap round trip);
#   3. a reduced calibration (--quick) of Llama-2-7B at TP 1 into OUT/profile;
#   4. the fidelity check: scenarios/gpu_fidelity_llama7b.toml (200 requests, one load) live on
#      the CUDA backend and in the simulator with [cost] model = "profile" on OUT/profile, and
#      `servesim fidelity --device cuda` of the two (fidelity.md, with the model on the live batches).
# Everything goes into one folder: OUT if set, else results/gpu-run/<UTC time>/.
#
# Usage: calibrate/gpu_run.sh
#        OUT=/tmp/run DEVICE=1 GPU=h100-80gb calibrate/gpu_run.sh
# DEVICE is the CUDA ordinal of the calibration (the live backend uses GPU 0); GPU names the
# catalogue GPU when the device name does not map to one.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
DEVICE=${DEVICE:-0}
GPU=${GPU:-}
OUT=${OUT:-results/gpu-run/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "[gpu_run $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_run.log"; }
die() {
    echo "gpu_run: $*" | tee -a "$OUT/gpu_run.log" >&2
    exit 2
}

# --- fail fast: driver, GPU, Rust, CUDA libraries ---
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: run this on a node with an NVIDIA GPU and driver"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || die "nvidia-smi failed (no working CUDA driver): $(tail -1 "$OUT/nvidia-smi.txt")"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

# cudarc loads libcuda, libnvrtc and libcublas at run time: put the usual locations of the CUDA
# libraries (toolkit, pip wheels nvidia-*-cu13 / -cu12) on the loader path. NVRTC must not be newer
# than the driver's CUDA version (PTX of a newer NVRTC is rejected by an older driver).
extra=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [ -d "$d" ]; then extra="$extra:$d"; fi
done
if command -v python3 >/dev/null; then
    site=$(python3 - <<'PY' 2>/dev/null || true
import os, site
for p in site.getsitepackages() + [site.getusersitepackages()]:
    n = os.path.join(p, "nvidia")
    if os.path.isdir(n):
        for root, dirs, files in os.walk(n):
            if any(f.startswith(("libnvrtc.so", "libcublas.so")) for f in files):
                print(root)
PY
)
    for d in $site; do extra="$extra:$d"; done
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$extra"
find_lib() {
    ldconfig -p 2>/dev/null | grep -q "$1" && return 0
    local d
    for d in ${LD_LIBRARY_PATH//:/ }; do
        compgen -G "$d/$1*" >/dev/null && return 0
    done
    return 1
}
find_lib libcuda.so || die "libcuda.so not found on the loader path (the NVIDIA driver's library)"
for lib in libnvrtc.so libcublas.so; do
    find_lib "$lib" || die "$lib not found: install the CUDA toolkit or pip install nvidia-cuda-nvrtc nvidia-cublas (matching the driver's CUDA version)"
done
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH; output in $OUT"

step() {
    local name=$1
    shift
    log "$name"
    local t0
    t0=$(date +%s)
    "$@" || die "$name failed (exit $?); see $OUT/gpu_run.log and the files next to it"
    log "$name took $(($(date +%s) - t0)) s"
}

# --- 1. build ---
step "build (release, --features cuda)" \
    cargo build --release -p servesim -p servesim-calibrate \
    --features servesim/cuda,servesim-calibrate/cuda
bin=$repo/target/release/servesim

# --- 2. self-tests ---
self_test() { "$bin" calibrate self-test --device "$DEVICE" 2>&1 | tee "$OUT/self-test.txt"; }
step "calibration kernel self-test" self_test
backend_test() {
    cargo test --release -p servesim-kernels --features cuda --test cuda -- --nocapture 2>&1 \
        | tee "$OUT/cuda-backend-test.txt"
    ! grep -q "skipped" "$OUT/cuda-backend-test.txt"
}
step "CUDA backend vs CPU backend" backend_test

# --- 3. reduced calibration ---
gpu_flag=()
if [ -n "$GPU" ]; then gpu_flag=(--gpu "$GPU"); fi
calibrate() {
    "$bin" calibrate run --model llama-2-7b --tp 1 --device "$DEVICE" --quick "${gpu_flag[@]}" \
        --out "$OUT/profile" --force 2>"$OUT/calibrate.progress" | tee "$OUT/calibrate.txt"
}
step "calibrate llama-2-7b tp1 --quick" calibrate
"$bin" calibrate report "$OUT/profile" --png "$OUT/profile-report.png" >"$OUT/profile-report.txt" \
    || log "calibrate report failed (not fatal)"

# --- 4. fidelity: live on the CUDA backend vs the simulator on the measured profile ---
gpu=$(sed -n 's/^gpu = "\(.*\)"$/\1/p' "$OUT/profile/meta.toml" | head -1)
[ -n "$gpu" ] || die "no gpu = \"…\" in $OUT/profile/meta.toml"
scenario=$OUT/gpu_fidelity_llama7b.toml
sed -e "s|\"\\.\\./|\"$repo/|g" \
    -e "s|^path = .*|path = \"$OUT/profile\"|" \
    -e "s|^gpu = .*|gpu = \"$gpu\"|" \
    scenarios/gpu_fidelity_llama7b.toml >"$scenario"
fidelity() { "$bin" fidelity "$scenario" --device cuda --out "$OUT/fidelity" --force | tee "$OUT/fidelity.txt"; }
step "fidelity: live --device cuda vs simulated on the measured profile (200 requests)" fidelity

log "done: $OUT (fidelity/fidelity.md: simulator vs live errors, per batch too; profile/: the measured profile)"
