#!/usr/bin/env bash
# Chunked prefill side by side with Vidur 0.0.26: servesim `sarathi` against Vidur's `sarathi`
# replica scheduler (chunk 512, 128 requests) on the traces run.sh makes (Llama-2-7B, A100-80GB,
# TP 1, Azure 2023 conversation lengths, Poisson 2 and 4 req/s). Prints E2E, TTFT, TPOT and ITL (time
# between tokens) tables and writes work/chunked.md, work/chunked.csv and work/chunked_itl.csv. Run after run.sh (or with its steps 1-3 done):
#   results/vidur/run_chunked.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="$HERE/work"
cd "$REPO"
[ -f "$WORK/trace_2rps.csv" ] || { echo "error: run results/vidur/run.sh first (it makes the traces)" >&2; exit 2; }
PY=${PY:-$WORK/venv/bin/python}
export PY WANDB_MODE=disabled
cargo build --release -p servesim --quiet
S="$REPO/target/release/servesim"

# servesim: sarathi × {analytic, profile} × overhead {4 ms default, 0} × {2, 4} req/s.
mkdir -p "$WORK/servesim"
for cost in analytic profile; do
  src="$HERE/sarathi_${cost}.toml"
  var="$WORK/sarathi_${cost}_overhead0.toml"
  sed "s#\"../../calibrate/#\"$REPO/calibrate/#; s#\"work/#\"$WORK/#" "$src" > "$var"
  if [ "$cost" = analytic ]; then
    printf '\n[cost.params]\niteration_overhead_s = 0.0\n' >> "$var"
  else
    sed -i 's#^model = "profile"$#model = "profile"\niteration_overhead_s = 0.0#' "$var"
  fi
  for rate in 2 4; do
    "$S" run "$src" --trace "$WORK/trace_${rate}rps.csv" --out "$WORK/servesim/sarathi_${cost}_${rate}rps" --quiet --force
    "$S" run "$var" --trace "$WORK/trace_${rate}rps.csv" --out "$WORK/servesim/sarathi_${cost}_overhead0_${rate}rps" --quiet --force
  done
done

# Vidur sarathi, one run at a time (kept when already there; VIDUR_RERUN=1 redoes them).
for rate in 2 4; do
  if [ "${VIDUR_RERUN:-0}" = 1 ] || [ -z "$(find "$WORK/vidur_sarathi_${rate}rps" -name request_metrics.csv 2>/dev/null)" ]; then
    nice -n 10 "$HERE/run_vidur_one.sh" sarathi "$rate" > "$WORK/vidur_sarathi_${rate}rps.log" 2>&1
  fi
done

rm -f "$WORK/chunked.csv" "$WORK/chunked_itl.csv"
{
  for rate in 2 4; do
    for metric in e2e ttft tpot; do
      echo
      echo "### \`sarathi\`, $rate req/s, $metric"
      echo
      d="$WORK/servesim"
      python3 "$HERE/compare.py" --metric "$metric" --vidur "$WORK/vidur_sarathi_${rate}rps" \
        --csv "$WORK/chunked.csv" --tag "sarathi,$rate" \
        --label "servesim analytic" "$d/sarathi_analytic_${rate}rps" \
        --label "servesim profile" "$d/sarathi_profile_${rate}rps" \
        --label "servesim analytic, overhead 0" "$d/sarathi_analytic_overhead0_${rate}rps" \
        --label "servesim profile, overhead 0" "$d/sarathi_profile_overhead0_${rate}rps"
    done
    echo
    echo "### \`sarathi\`, $rate req/s, time between tokens (ITL / TBT)"
    echo
    python3 "$HERE/compare_itl.py" --vidur "$WORK/vidur_sarathi_${rate}rps" \
      --csv "$WORK/chunked_itl.csv" --tag "sarathi,$rate" \
      --label "servesim analytic" "$d/sarathi_analytic_${rate}rps" \
      --label "servesim profile" "$d/sarathi_profile_${rate}rps" \
      --label "servesim analytic, overhead 0" "$d/sarathi_analytic_overhead0_${rate}rps" \
      --label "servesim profile, overhead 0" "$d/sarathi_profile_overhead0_${rate}rps"
  done
} | tee "$WORK/chunked.md"
