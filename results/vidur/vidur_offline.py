#!/usr/bin/env python3
"""Run Vidur 0.0.26 (PyPI) offline on local A100 / Llama-2-7B profiles.

Vidur 0.0.26 downloads its operator profiles from Hugging Face datasets (`snapshot_download` in
`vidur/execution_time_predictor/sklearn_execution_time_predictor.py`,
`SklearnExecutionTimePredictor._get_input_files`) and first tries to download pre-computed
predictions (`_load_predictions_from_hf`). This wrapper builds the two dataset folders that
function expects (config.json + `*.csv.xz`) from files committed in this repository, points
`snapshot_download` at them, refuses every other download (so the predictions are trained locally
with Vidur's own default random-forest grid search and cached under --cache-dir), and then runs
`vidur.main` with the remaining arguments unchanged.

With --orca-kv-fix, every Batch the orca scheduler forms gets a KV length for each of its requests
(the newly admitted ones included, `num_processed_tokens + q tokens`, as the scheduler computes for
the resumed ones), so their prefill attention is charged. Only for measuring what Vidur's omission
costs; the reference runs do not use it.

Usage: vidur_offline.py --work DIR [--orca-kv-fix] -- <vidur.main arguments>
"""

import argparse
import json
import lzma
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Vidur's own measured per-operator profile (A100-SXM4-80GB, Llama-2-7B), copied with provenance
# into calibrate/data/vidur/ (see its README): only the median columns, which are all Vidur reads.
MLP_CSV = os.path.join(REPO, "calibrate/data/vidur/compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv")
# A *fitted* stand-in for Vidur's attention profile (see results/vidur/README.md, "Inputs").
ATTENTION_XZ = os.path.join(HERE, "data/attention_reconstructed_a100_llama2_7b_tp1.csv.xz")
# Not read at TP 1 / PP 1, but the dataset must name the files.
ALL_REDUCE_CSV = os.path.join(REPO, "calibrate/data/vidur/network/a100_dgx/all_reduce.csv")

COMPUTE_REPO = "local/vidur-a100-llama-2-7b"
NETWORK_REPO = "local/vidur-a100-pairwise-nvlink"


def write_xz(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(lzma.compress(data))


def build_datasets(work):
    compute = os.path.join(work, "datasets", "compute")
    network = os.path.join(work, "datasets", "network")
    for d in (compute, network):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(compute, "config.json"), "w") as f:
        json.dump({"model": "meta-llama/Llama-2-7b-hf", "device_sku": "a100"}, f)
    write_xz(MLP_CSV, os.path.join(compute, "mlp.csv.xz"))
    shutil.copyfile(ATTENTION_XZ, os.path.join(compute, "attention.csv.xz"))
    with open(os.path.join(network, "config.json"), "w") as f:
        json.dump({"sku": "a100_pairwise_nvlink"}, f)
    write_xz(ALL_REDUCE_CSV, os.path.join(network, "all_reduce.csv.xz"))
    write_xz(ALL_REDUCE_CSV, os.path.join(network, "send_recv.csv.xz"))
    return {COMPUTE_REPO: compute, NETWORK_REPO: network}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", required=True, help="folder for the local datasets")
    ap.add_argument("--orca-kv-fix", action="store_true")
    ap.add_argument("vidur_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    vidur_args = args.vidur_args
    if vidur_args and vidur_args[0] == "--":
        vidur_args = vidur_args[1:]

    local = build_datasets(args.work)
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ["HF_HUB_OFFLINE"] = "1"

    import vidur.execution_time_predictor.sklearn_execution_time_predictor as skl

    def local_snapshot(repo_id, **_kwargs):
        if repo_id in local:
            return local[repo_id]
        # Pre-computed predictions on the Hub: refuse, so Vidur trains its own.
        raise FileNotFoundError(f"offline: no local copy of {repo_id}")

    skl.snapshot_download = local_snapshot

    if args.orca_kv_fix:
        import vidur.scheduler.replica_scheduler.orca_replica_scheduler as orca

        batch_cls = orca.Batch

        def batch_with_every_kv(replica_id, requests, num_q_tokens, num_kv_tokens):
            kv = list(num_kv_tokens)
            for request, q in zip(requests[len(kv):], num_q_tokens[len(kv):]):
                kv.append(request.num_processed_tokens + q)
            return batch_cls(replica_id, requests, num_q_tokens, kv)

        orca.Batch = batch_with_every_kv

    predictor = "random_forrest_execution_time_predictor_config"
    sys.argv = [
        "vidur",
        f"--{predictor}_model_profiling_dataset",
        COMPUTE_REPO,
        f"--{predictor}_network_profiling_dataset",
        NETWORK_REPO,
    ] + vidur_args
    from vidur.main import main as vidur_main

    vidur_main()


if __name__ == "__main__":
    main()
