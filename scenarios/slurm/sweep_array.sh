#!/usr/bin/env bash
# A servesim sweep spread over a Slurm job array: array task I of N runs shard I/N of the sweep
# (the runs whose index mod N is I), and a dependent job merges the N shard directories into the
# directory an unsharded `servesim sweep` writes (same sweep.csv, byte for byte; runs/; plots/).
#
# Submit from the repository root, N = the array size (here 8):
#   sbatch --array=0-7 scenarios/slurm/sweep_array.sh scenarios/policies_sharegpt.toml
# Outputs: results/<scenario>/shards/shard-I (one per task), then results/<scenario>/sweep.
# Every task must run the same servesim build on the same scenario and options (`servesim merge`
# refuses shards whose fingerprints differ). Any batch scheduler works the same way: run
# `servesim sweep S --shard I/N --out DIR_I` for I = 0..N-1 anywhere, then
# `servesim merge DIR_0 ... DIR_{N-1} --out DIR`.
#
#SBATCH --job-name=servesim-sweep
#SBATCH --cpus-per-task=8
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

SCENARIO=${1:?usage: sbatch --array=0-(N-1) $0 SCENARIO.toml [extra servesim sweep options]}
shift
SERVESIM=${SERVESIM:-target/release/servesim}
NAME=$(basename "$SCENARIO" .toml)
OUT=${OUT:-results/$NAME}

if [[ -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    echo "not an array task: submit with sbatch --array=0-(N-1)" >&2
    exit 2
fi
I=$SLURM_ARRAY_TASK_ID
N=$SLURM_ARRAY_TASK_COUNT

"$SERVESIM" sweep "$SCENARIO" --shard "$I/$N" --jobs "${SLURM_CPUS_PER_TASK:-1}" \
    --out "$OUT/shards/shard-$I" "$@"

# The last task to start queues the merge after the whole array has finished successfully.
if [[ "$I" -eq "$SLURM_ARRAY_TASK_MAX" ]]; then
    SHARDS=()
    for ((k = 0; k < N; k++)); do SHARDS+=("$OUT/shards/shard-$k"); done
    sbatch --dependency="afterok:$SLURM_ARRAY_JOB_ID" --job-name=servesim-merge \
        --output="slurm-%j-merge.out" --time=00:30:00 \
        --wrap="$SERVESIM merge ${SHARDS[*]} --out $OUT/sweep"
fi
