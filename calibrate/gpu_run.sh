#!/usr/bin/env bash
# Calibrate servesim on this machine's GPU in one go:
#   1. build servesim and servesim-calibrate with the `cuda` feature;
#   2. run the kernel self-test (GPU results vs CPU references);
#   3. measure, fit and write the profiles of OPT-13B and Llama-2-7B at TP=1
#      (calibrate/profiles/<gpu>/<model>/tp1/), timing each;
#   4. draw the reports and compare the measurements with the analytic model and the Vidur import;
#   5. run the GPU-only tests.
# Everything is logged to results/calibrate/gpu_run-<UTC time>/. Afterwards review and commit the
# profile directories (and the comparison files) by hand.
#
# Usage: calibrate/gpu_run.sh            full plans
#        QUICK=1 calibrate/gpu_run.sh    the quick plans (smoke test, about a minute)
#        MODELS="llama-2-7b" DEVICE=1 calibrate/gpu_run.sh
set -euo pipefail

cd "$(dirname "$0")/.."
MODELS=${MODELS:-"llama-2-7b opt-13b"}
DEVICE=${DEVICE:-0}
QUICK=${QUICK:-0}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
log_dir="results/calibrate/gpu_run-$stamp"
mkdir -p "$log_dir"
log() { echo "[gpu_run $(date -u +%H:%M:%S)] $*" | tee -a "$log_dir/gpu_run.log"; }

# cudarc loads libcuda, libnvrtc and libcublas at run time: put the usual locations of the CUDA
# libraries (toolkit, pip wheels nvidia-*-cu13 / -cu12) on the loader path. NVRTC must not be newer
# than the driver's CUDA version (PTX of a newer NVRTC is rejected by an older driver).
extra=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && extra="$extra:$d"
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
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi | tee "$log_dir/nvidia-smi.txt"
else
    log "nvidia-smi not found"
fi

log "building (release, --features cuda)"
t0=$(date +%s)
cargo build --release -p servesim
cargo build --release -p servesim-calibrate --features cuda
log "build took $(( $(date +%s) - t0 )) s"
bin=target/release/servesim

log "self-test"
"$bin" calibrate self-test --device "$DEVICE" | tee "$log_dir/self-test.txt"

quick_flag=""
[ "$QUICK" = "1" ] && quick_flag="--quick"
for model in $MODELS; do
    log "measuring $model tp1 $quick_flag"
    t0=$(date +%s)
    "$bin" calibrate run --model "$model" --tp 1 --device "$DEVICE" $quick_flag \
        2> >(tee "$log_dir/run-$model.progress" >&2) | tee "$log_dir/run-$model.txt"
    secs=$(( $(date +%s) - t0 ))
    log "$model: measured, fitted and written in $secs s"
    dir=$(sed -n 's/^.*; wrote \(.*\)$/\1/p' "$log_dir/run-$model.txt" | tail -1)
    if [ -n "$dir" ]; then
        "$bin" calibrate report "$dir" --png "$log_dir/report-$model.png" > "$log_dir/report-$model.txt"
        "$bin" calibrate compare "$dir" --out "$log_dir/compare-$model.md" > /dev/null
        cp "$log_dir/compare-$model.md" "$dir/../COMPARISON-tp1.md" || true
        log "$model: report $log_dir/report-$model.png, comparison $log_dir/compare-$model.md"
    fi
done

log "GPU-only tests"
cargo test --release -p servesim-calibrate --features cuda --test gpu -- --nocapture 2>&1 \
    | tee "$log_dir/tests-gpu.txt"

log "done: review calibrate/profiles/ (git status) and the files in $log_dir, then commit the profiles"
