#!/usr/bin/env bash
# Re-run every experiment behind results/README.md into results/out/ (not committed) and print the
# tables. Deterministic: the same commands give byte-identical sweep.csv / capacity.csv files.
#
#   results/regenerate.sh            # everything (about 20-30 minutes on 2 cores)
#   results/regenerate.sh quick      # the sweeps only (a few minutes)
#
# Run from the repository root after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
S=target/release/servesim
O=results/out
T="python3 results/tables.py"
mkdir -p "$O"
[ -x "$S" ] || { echo "error: build first: cargo build --release" >&2; exit 2; }

sweep() { # NAME [extra args]
  local name=$1; shift
  echo "== sweep $name" >&2
  /usr/bin/time -f "   $name: %e s wall" "$S" sweep "scenarios/$name.toml" --out "$O/$name" --force "$@" >/dev/null
}
cap() { # OUTNAME SCENARIO args...
  local out=$1 sc=$2; shift 2
  echo "== capacity $out" >&2
  /usr/bin/time -f "   $out: %e s wall" "$S" capacity "scenarios/$sc.toml" --out "$O/cap-$out" --force "$@" >/dev/null
  cat "$O/cap-$out/capacity.csv"
}

sweep policies_sharegpt
sweep alise_predictors_sharegpt
sweep alise_aging_ablation
sweep fastserve_memory_ablation
sweep fastserve_paper_window
sweep fastserve_opt13b_sharegpt
sweep fastserve_opt66b_tp4_sweep
sweep fastserve_opt175b_tp8_pp2_sweep
sweep alise_vs_vllm_sharegpt
sweep alise_vs_vllm_alpaca
sweep chunked_prefill_sharegpt
sweep chunked_prefill_azure_conv
sweep fastserve_chunked_sharegpt
sweep fastserve_chunked_azure_conv

echo "## policies_sharegpt"
for m in jct_mean_s:.2f jct_p99_s:.1f per_token_mean_s:.4f preemptions:.0f achieved_rate_per_s:.3f; do
  echo "### ${m%%:*}"; $T "$O/policies_sharegpt/sweep.csv" --metric "${m%%:*}" --fmt "${m##*:}" --col-suffix " req/s"
done
echo "## alise_predictors_sharegpt"; $T "$O/alise_predictors_sharegpt/sweep.csv" --metric jct_mean_s --rows predictor --col-suffix " req/s"
echo "## alise_aging_ablation"; $T "$O/alise_aging_ablation/sweep.csv" --metric jct_mean_s --rows policies.alise.aging_weight --col-suffix " req/s"
echo "## fastserve_memory_ablation"; $T "$O/fastserve_memory_ablation/sweep.csv" --metric jct_mean_s --rows policies.skip-join-mlfq.offload,policies.skip-join-mlfq.preemption --col-suffix " req/s"
echo "## fastserve_paper_window"; $T "$O/fastserve_paper_window/sweep.csv" --metric jct_mean_s --rows policies.skip-join-mlfq.swap_in_window --col-suffix " req/s"
for sc in fastserve_opt13b_sharegpt fastserve_opt66b_tp4_sweep fastserve_opt175b_tp8_pp2_sweep alise_vs_vllm_sharegpt alise_vs_vllm_alpaca; do
  echo "## $sc"; $T "$O/$sc/sweep.csv" --metric jct_mean_s --col-suffix " req/s"; $T "$O/$sc/sweep.csv" --metric achieved_rate_per_s --fmt .3f --col-suffix " req/s"
done

for sc in chunked_prefill_sharegpt chunked_prefill_azure_conv; do
  for m in jct_mean_s ttft_p99_s tpot_p99_s itl_p99_s; do
    echo "## $sc $m"; $T "$O/$sc/sweep.csv" --metric "$m" --fmt .3f --col-suffix " req/s"
  done
  echo "## $sc stable"; $T "$O/$sc/sweep.csv" --metric stable --fmt .2f --col-suffix " req/s"
done
for sc in fastserve_chunked_sharegpt fastserve_chunked_azure_conv; do
  for m in jct_mean_s ttft_p99_s itl_p99_s stable preemptions; do
    echo "## $sc $m"; $T "$O/$sc/sweep.csv" --metric "$m" --fmt .3f --rows policies.skip-join-mlfq.chunk_size --col-suffix " req/s"
  done
done

[ "${1:-}" = quick ] && exit 0

sweep alise_memory_ablation
echo "## alise_memory_ablation"; $T "$O/alise_memory_ablation/sweep.csv" --metric jct_mean_s --rows policies.alise.offload,policies.alise.kv_offload_bits --cols memory.host_kv_bytes,rate
# Figures: the sweep plots of policies_sharegpt and fastserve_opt13b_sharegpt, the capacity bars, KV usage.
cp "$O"/policies_sharegpt/plots/{jct_mean_vs_rate,jct_p99_vs_rate,per_token_vs_rate,jct_cdf}.png results/figures/
cp "$O"/fastserve_opt13b_sharegpt/plots/goodput_vs_rate.png results/figures/
cap figure fastserve_opt13b_sharegpt --slo per_token_s=0.3 --policies vllm,skip-join-mlfq,alise,srpt-oracle,fcfs --num-requests 5000
cp "$O"/cap-figure/capacity.png results/figures/
"$S" run scenarios/fastserve_memory_ablation.toml --rate 1.4 --num-requests 2000 --out "$O/kv-run" --force >/dev/null
"$S" plot "$O/kv-run" >/dev/null && cp "$O"/kv-run/plots/kv_usage.png results/figures/
cap policies-sharegpt-5k policies_sharegpt --slo per_token_s=0.3 --policies vllm,skip-join-mlfq,alise,srpt-oracle,fcfs,mlfq --seeds 0,1,2
for sc in fastserve_opt13b_sharegpt:skip-join-mlfq fastserve_opt66b_tp4_sweep:skip-join-mlfq \
          fastserve_opt175b_tp8_pp2_sweep:skip-join-mlfq alise_vs_vllm_sharegpt:alise alise_vs_vllm_alpaca:alise; do
  name=${sc%%:*}; pol=${sc##*:}
  for n in default 5000; do
    extra=(); [ "$n" = default ] || extra=(--num-requests "$n")
    cap "$name-$n-pertoken" "$name" --slo per_token_s=0.3 --policies "vllm,$pol" --seeds 0,1,2 "${extra[@]}"
    cap "$name-$n-goodput" "$name" --goodput min=0.95 --policies "vllm,$pol" --seeds 0,1,2 "${extra[@]}"
  done
done
for pair in 1.55,0.15 3.1,0.3 6.2,0.6; do
  cap "goodput-${pair/,/-}" fastserve_opt13b_sharegpt --goodput "ttft_s=${pair%%,*},tpot_s=${pair##*,},min=0.95" --policies vllm,skip-join-mlfq --seeds 0,1,2
done
