#!/usr/bin/env bash
# The CPU fidelity table of results/fidelity/: calibrate cpu-small-4x512 on this machine, find each
# policy's modelled capacity, then `servesim fidelity` (simulate with the profile, execute live on the
# CPU backend, compare) at 50 % and 90 % of it, 300 requests, 2 threads. About 20 minutes on 2 cores;
# run it on a quiet machine (nothing else busy: the live runs and the calibration are timings).
#
#   scripts/fidelity-cpu.sh [SERVESIM]          (default: target/release/servesim)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/servesim}
scenario=scenarios/fidelity_cpu_small.toml
profile=calibrate/profiles/cpu/cpu-small-4x512/tp1/
out=results/fidelity/cpu-small-4x512
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" calibrate run --device cpu --model cpu-small-4x512 --threads 2 --out "$profile"
"$bin" capacity "$scenario" --slo jct_s=1000 --policies vllm,skip-join-mlfq --quiet --out "$tmp/cap" |
    grep -v "^capacity.csv" | tee "$tmp/capacity.txt"
for policy in vllm skip-join-mlfq; do
    rates=$(python3 -c "
import json, sys
c = {p['policy']: p['capacity_rate_per_s'] for p in json.load(open('$tmp/cap/capacity.json'))['policies']}
print(f'{0.5 * c[\"$policy\"]:.2f},{0.9 * c[\"$policy\"]:.2f}')")
    "$bin" fidelity "$scenario" --policies "$policy" --rates "$rates" --num-requests 300 --threads 2 \
        --out "$out/$policy"
done
cp "$tmp/capacity.txt" "$out/capacity.txt"
for policy in vllm skip-join-mlfq; do python3 results/fidelity/batches.py "$out/$policy"; done > "$out/batches.md"
