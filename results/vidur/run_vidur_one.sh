#!/usr/bin/env bash
# One Vidur run: run_vidur_one.sh POLICY RATE  (POLICY = vllm | orca | sarathi). Needs $PY (a Python with
# vidur==0.0.26) and the work/ folder made by run.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$HERE/work"
policy=$1 rate=$2
fix=()
out="$WORK/vidur_${policy}_${rate}rps"
# VIDUR_ORCA_KV_FIX=1: charge the prefill attention of newly admitted orca requests (see
# vidur_offline.py); written to a separate folder.
if [ "${VIDUR_ORCA_KV_FIX:-0}" = 1 ]; then fix=(--orca-kv-fix); out="${out}_kvfix"; fi
rm -rf "$out"
P=random_forrest_execution_time_predictor_config
# Vidur's default random-forest grid search (3 × 3 × 3 settings × 10-fold CV per operator) takes
# over an hour on 1-2 busy cores; by default one setting of that grid is used (still 10-fold CV).
# VIDUR_FULL_GRID=1 restores Vidur's own grid (the cache key does not include the grid: clear
# work/vidur_cache when switching).
grid=(--${P}_num_estimators 250 --${P}_max_depth 32 --${P}_min_samples_split 2)
[ "${VIDUR_FULL_GRID:-0}" = 1 ] && grid=()
case "$policy" in
  vllm) sched=(--replica_scheduler_config_type vllm --vllm_scheduler_config_batch_size_cap 128
               --vllm_scheduler_config_max_tokens_in_batch 4096) ;;
  orca) sched=(--replica_scheduler_config_type orca --orca_scheduler_config_batch_size_cap 128) ;;
  # Sarathi-Serve: Vidur's defaults (chunk 512, batch cap 128), the paper's strict-SLO budget.
  sarathi) sched=(--replica_scheduler_config_type sarathi --sarathi_scheduler_config_batch_size_cap 128
                  --sarathi_scheduler_config_chunk_size 512) ;;
  *) echo "policy must be vllm, orca or sarathi" >&2; exit 2 ;;
esac
WANDB_MODE=disabled "$PY" "$HERE/vidur_offline.py" --work "$WORK" "${fix[@]}" -- \
  --seed 0 \
  --cluster_config_num_replicas 1 \
  --replica_config_model_name meta-llama/Llama-2-7b-hf \
  --replica_config_device a100 --replica_config_network_device a100_pairwise_nvlink \
  --replica_config_tensor_parallel_size 1 --replica_config_num_pipeline_stages 1 \
  "${sched[@]}" \
  --request_generator_config_type trace_replay \
  --trace_request_generator_config_trace_file "$WORK/vidur_trace_${rate}rps.csv" \
  --trace_request_generator_config_date 2023-11-16 \
  --trace_request_generator_config_prefill_scale_factor 1 \
  --trace_request_generator_config_decode_scale_factor 1 \
  --trace_request_generator_config_time_scale_factor 1 \
  --trace_request_generator_config_max_tokens 4096 \
  --execution_time_predictor_config_type random_forrest \
  --${P}_prediction_max_tokens_per_request 131072 \
  --${P}_num_training_job_threads "${VIDUR_THREADS:-1}" \
  --${P}_cache_dir "$WORK/vidur_cache" "${grid[@]}" \
  --metrics_config_output_dir "$out" \
  --metrics_config_store_token_completion_metrics \
  --no-metrics_config_store_plots --no-metrics_config_enable_chrome_trace \
  --no-metrics_config_write_json_trace
