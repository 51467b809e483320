#!/usr/bin/env bash
# Count the instructions one servesim binary executes on a few fixed workloads (valgrind
# callgrind's Ir total; exact and independent of machine load, unlike wall time). Compare two
# builds for refactors that must not slow the engine:
#
#   scripts/instructions.sh OLD_BINARY > old.txt; scripts/instructions.sh NEW_BINARY > new.txt
#   paste old.txt new.txt
#
# Needs valgrind. Each workload takes 10-60 s under callgrind.
set -euo pipefail
bin=$1
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
work() { # NAME ARGS...
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$bin" "$@" --out "$tmp/o-$name" \
    --quiet --no-requests-csv >/dev/null 2>"$tmp/err" || { echo "$name failed:"; cat "$tmp/err"; exit 1; }
  local ir
  ir=$(grep -m1 '^summary:' "$tmp/cg.out" | awk '{print $2}')
  printf '%-28s %15s\n' "$name" "$ir"
}
work vllm-sharegpt-20k   run scenarios/bench_sharegpt_vllm.toml --num-requests 20000
work skipjoin-sharegpt-20k run scenarios/bench_sharegpt_skipjoin.toml --num-requests 20000
work srpt-sharegpt-20k   run scenarios/bench_sharegpt_srpt.toml --num-requests 20000
work sarathi-sharegpt-20k run scenarios/bench_sharegpt_sarathi.toml --num-requests 20000
work vllm-v1-sharegpt-20k run scenarios/bench_sharegpt_vllm_v1.toml --num-requests 20000
work vllm-azure-conv-10k run scenarios/bench_vllm_azure_conv_10k.toml
work cluster-16x-20k     run scenarios/cluster_1m_16x.toml --num-requests 20000
