#!/usr/bin/env bash
# Side by side with Vidur 0.0.26: reproduces the tables of results/vidur/README.md from a clean
# clone. Run from anywhere: results/vidur/run.sh
#
# Needs: a Rust toolchain (builds servesim), python3 with venv + pip and access to PyPI (installs
# vidur==0.0.26 into results/vidur/work/venv unless $PY names a Python that already has it).
# Everything it writes goes under results/vidur/work/ (git-ignored); the tables are printed and
# written to work/comparison.md and work/comparison.csv.
# CPU: servesim takes seconds per run; each Vidur run 1-3 minutes, the first one also trains and caches its
# random-forest predictors (work/vidur_cache, a few minutes). Vidur runs one at a time.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="$HERE/work"
mkdir -p "$WORK"
cd "$REPO"

# 1. Vidur from PyPI, in a venv outside the source tree's tracked files.
if [ -z "${PY:-}" ]; then
  if [ ! -x "$WORK/venv/bin/python" ]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install --quiet vidur==0.0.26
  fi
  PY="$WORK/venv/bin/python"
fi
export PY WANDB_MODE=disabled

# 2. servesim.
cargo build --release -p servesim --quiet
S="$REPO/target/release/servesim"

# 3. The trace both simulators replay: 10,000 requests, Poisson arrivals at 2 and 4 req/s, lengths
#    sampled (seed 0) from the Azure 2023 conversation trace, rows over Llama-2's 4,096-token
#    context skipped (as scenarios/bench_vllm_azure_conv_10k.toml does).
for rate in 2 4; do
  "$S" trace synth --rate "$rate" --lengths-file traces/azure_conv_2023.csv --max-total 4096 \
    --num 10000 --seed 0 --out "$WORK/trace_${rate}rps.csv"
  python3 "$HERE/vidur_trace.py" "$WORK/trace_${rate}rps.csv" "$WORK/vidur_trace_${rate}rps.csv"
done

# 4. servesim: {vllm, fcfs} × {analytic, profile} × {2, 4} req/s, with the default
#    iteration_overhead_s (4 ms), the former assumption (2 ms) and none (Vidur models no CPU
#    overhead). The variants are the committed scenarios with the overhead set.
mkdir -p "$WORK/servesim"
for pol in vllm fcfs; do
  for cost in analytic profile; do
    src="$HERE/${pol}_${cost}.toml"
    for ov in 0:0.0 2ms:0.002; do
      tag=${ov%%:*} val=${ov##*:}
      var="$WORK/${pol}_${cost}_overhead${tag}.toml"
      sed "s#\"../../calibrate/#\"$REPO/calibrate/#; s#\"work/#\"$WORK/#" "$src" > "$var"
      if [ "$cost" = analytic ]; then
        printf '\n[cost.params]\niteration_overhead_s = %s\n' "$val" >> "$var"
      else
        sed -i "s#^model = \"profile\"\$#model = \"profile\"\niteration_overhead_s = $val#" "$var"
      fi
    done
    for rate in 2 4; do
      "$S" run "$src" --trace "$WORK/trace_${rate}rps.csv" --out "$WORK/servesim/${pol}_${cost}_${rate}rps" --quiet --force
      for tag in 0 2ms; do
        "$S" run "$WORK/${pol}_${cost}_overhead${tag}.toml" --trace "$WORK/trace_${rate}rps.csv" \
          --out "$WORK/servesim/${pol}_${cost}_overhead${tag}_${rate}rps" --quiet --force
      done
    done
  done
done

# 5. Vidur: {vllm, orca} × {2, 4} req/s, one run at a time. A run whose output already holds a
#    request_metrics.csv is kept (the traces are deterministic); VIDUR_RERUN=1 redoes them all.
done_already() {
  [ "${VIDUR_RERUN:-0}" != 1 ] && [ -n "$(find "$1" -name request_metrics.csv 2>/dev/null)" ]
}
for pol in vllm orca; do
  for rate in 2 4; do
    done_already "$WORK/vidur_${pol}_${rate}rps" && continue
    nice -n 10 "$HERE/run_vidur_one.sh" "$pol" "$rate" > "$WORK/vidur_${pol}_${rate}rps.log" 2>&1
  done
done

# 5b. Vidur orca once more with the prefill attention of newly admitted requests charged
#     (vidur_offline.py --orca-kv-fix), to measure what the omission costs.
for rate in 2 4; do
  done_already "$WORK/vidur_orca_${rate}rps_kvfix" && continue
  VIDUR_ORCA_KV_FIX=1 nice -n 10 "$HERE/run_vidur_one.sh" orca "$rate" > "$WORK/vidur_orca_${rate}rps_kvfix.log" 2>&1
done

# 6. Statistics.
rm -f "$WORK/comparison.csv"
{
  for pair in vllm:vllm fcfs:orca; do
    pol=${pair%%:*} vpol=${pair##*:}
    for rate in 2 4; do
      echo
      echo "### \`$pol\` (Vidur \`$vpol\`), $rate req/s"
      echo
      d="$WORK/servesim"
      python3 "$HERE/compare.py" --vidur "$WORK/vidur_${vpol}_${rate}rps" --csv "$WORK/comparison.csv" \
        --tag "$pol,$rate" \
        --label "servesim analytic" "$d/${pol}_analytic_${rate}rps" \
        --label "servesim profile" "$d/${pol}_profile_${rate}rps" \
        --label "servesim analytic, overhead 2 ms" "$d/${pol}_analytic_overhead2ms_${rate}rps" \
        --label "servesim profile, overhead 2 ms" "$d/${pol}_profile_overhead2ms_${rate}rps" \
        --label "servesim analytic, overhead 0" "$d/${pol}_analytic_overhead0_${rate}rps" \
        --label "servesim profile, overhead 0" "$d/${pol}_profile_overhead0_${rate}rps"
      if [ "$vpol" = orca ]; then
        echo
        echo "Against Vidur \`orca\` with the prefill attention of admitted requests charged (--orca-kv-fix):"
        echo
        python3 "$HERE/compare.py" --vidur "$WORK/vidur_orca_${rate}rps_kvfix" --csv "$WORK/comparison.csv" \
          --tag "$pol-kvfix,$rate" --vidur-label "Vidur 0.0.26, orca KV fix" \
          --label "servesim analytic" "$d/${pol}_analytic_${rate}rps" \
          --label "servesim profile" "$d/${pol}_profile_${rate}rps" \
          --label "servesim analytic, overhead 2 ms" "$d/${pol}_analytic_overhead2ms_${rate}rps" \
          --label "servesim profile, overhead 2 ms" "$d/${pol}_profile_overhead2ms_${rate}rps" \
          --label "servesim analytic, overhead 0" "$d/${pol}_analytic_overhead0_${rate}rps" \
          --label "servesim profile, overhead 0" "$d/${pol}_profile_overhead0_${rate}rps"
      fi
    done
  done
} | tee "$WORK/comparison.md"
