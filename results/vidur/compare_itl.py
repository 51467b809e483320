#!/usr/bin/env python3
"""Token-level comparison (time between tokens) of servesim runs with a Vidur run on the same trace.

Usage: compare_itl.py --vidur VIDUR_OUT_DIR [--label LABEL] SERVESIM_RUN_DIR... [--csv OUT.csv]

Vidur (run with --metrics_config_store_token_completion_metrics) writes the distribution of
`decode_token_execution_plus_preemption_time` as 101 quantiles (plots/…csv, from its DDSketch): for
each decode token, the time from the end of the request's previous iteration to the end of the
iteration that produced it — a request's gaps between consecutive tokens, vLLM's ITL. servesim's
summary.json `itl_s` pools the same gaps over all requests (a sketch with 1 % relative error;
docs/metrics.md). Printed: p50, p90, p99 and the mean (Vidur's mean is the average of its 101
quantiles, an approximation marked ≈), and each servesim percentile's difference from Vidur's.
Pure Python.
"""

import argparse
import csv
import glob
import json
import os
import sys

QUANTILES = ("p50", "p90", "p99")


def read_vidur(path):
    files = sorted(
        glob.glob(
            os.path.join(path, "**", "decode_token_execution_plus_preemption_time.csv"),
            recursive=True,
        )
    )
    if len(files) != 1:
        sys.exit(
            f"{path}: expected one decode_token_execution_plus_preemption_time.csv, found "
            f"{len(files)} (run Vidur with --metrics_config_store_token_completion_metrics)"
        )
    q = {}
    with open(files[0], newline="") as f:
        for r in csv.DictReader(f):
            q[round(float(r["cdf"]), 2)] = float(r["decode_token_execution_plus_preemption_time"])
    return {
        "p50": q[0.5],
        "p90": q[0.9],
        "p99": q[0.99],
        "mean": sum(q.values()) / len(q),
        "mean_approx": True,
    }


def read_servesim(path):
    with open(os.path.join(path, "summary.json")) as f:
        itl = json.load(f).get("itl_s")
    if not itl:
        sys.exit(f"{path}: summary.json has no itl_s (rerun with a servesim that reports ITL)")
    return {
        "p50": itl["p50"],
        "p90": itl["p90"],
        "p99": itl["p99"],
        "mean": itl["mean"],
        "mean_approx": False,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vidur", required=True)
    ap.add_argument("--vidur-label", default="Vidur 0.0.26")
    ap.add_argument("--label", action="append", default=[], help="label per servesim dir, in order")
    ap.add_argument("--csv", help="append the rows to this CSV (header written when new)")
    ap.add_argument("--tag", default="", help="a first column for --csv rows (e.g. sarathi,2)")
    ap.add_argument("servesim", nargs="+")
    args = ap.parse_intermixed_args()

    ref = read_vidur(args.vidur)
    rows = [(args.vidur_label, ref)]
    for k, d in enumerate(args.servesim):
        rows.append((args.label[k] if k < len(args.label) else d, read_servesim(d)))

    print("| simulator | mean ITL (s) | p50 (s) | p90 (s) | p99 (s) | p50 / p90 / p99 vs Vidur |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        mean = ("≈ " if r["mean_approx"] else "") + f"{r['mean']:.4f}"
        diff = "—"
        if r is not ref:
            diff = " / ".join(f"{(r[q] / ref[q] - 1) * 100:+.1f}%" for q in QUANTILES)
        print(f"| {label} | {mean} | {r['p50']:.4f} | {r['p90']:.4f} | {r['p99']:.4f} | {diff} |")
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["tag", "simulator", "mean_s", "p50_s", "p90_s", "p99_s"])
            for label, r in rows:
                w.writerow([args.tag, label, r["mean"], r["p50"], r["p90"], r["p99"]])


if __name__ == "__main__":
    main()
