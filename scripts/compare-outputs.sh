#!/usr/bin/env bash
# Run every scenario family with two servesim binaries and compare their outputs byte for byte
# (timing.json, which holds wall-clock times, is left out). For refactors that must not change
# results: build the old commit, copy its binary aside, build the new one, then
#
#   scripts/compare-outputs.sh OLD_BINARY NEW_BINARY [WORK_DIR]
#
# Million-request scenarios run on their first 100,000 requests and sweeps on 1,000 per point, so
# the whole comparison takes a few minutes on 2 cores. Exit status 0 = identical, 1 = differences.
set -euo pipefail
old=$1 new=$2 work=${3:-$(mktemp -d)}
cd "$(dirname "$0")/.."
mkdir -p "$work"
status=0
for sc in scenarios/*.toml; do
  name=$(basename "$sc" .toml)
  if grep -q '^\[sweep\]' "$sc"; then
    args=(sweep "$sc" --num-requests 1000 --no-plots)
  else
    args=(run "$sc" --quiet)
    grep -q 'num_requests = 1000000' "$sc" && args+=(--num-requests 100000)
  fi
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    rm -rf "$work/$side/$name"
    "$bin" "${args[@]}" --out "$work/$side/$name" >/dev/null 2>"$work/$name.$side.err" || {
      echo "$name: $side binary failed: $(tail -1 "$work/$name.$side.err")"; status=1; }
  done
  if diff -r -x timing.json -x '*.timing.json' "$work/old/$name" "$work/new/$name" >"$work/$name.diff" 2>&1; then
    echo "$name: identical"
  else
    echo "$name: DIFFERENT (see $work/$name.diff)"; status=1
  fi
done
exit $status
