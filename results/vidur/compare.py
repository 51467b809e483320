#!/usr/bin/env python3
"""Per-request E2E comparison of servesim runs with a Vidur run on the same trace.

Usage: compare.py --vidur VIDUR_OUT_DIR [--label LABEL] SERVESIM_RUN_DIR... [--csv OUT.csv]

VIDUR_OUT_DIR is Vidur's metrics output folder (the request_metrics.csv under it is found
recursively); each SERVESIM_RUN_DIR holds a servesim requests.csv. Requests are matched by id:
both simulators number the trace's rows 0, 1, … in order (Vidur's `Request Id`, servesim's `id`),
and the script checks that the matched requests have the same prompt and output lengths.

Printed per simulator: requests, mean / median / p99 of the --metric (seconds), the mean's
difference from Vidur's, and the Pearson correlation r of the per-request values with Vidur's:
- e2e (default): finish − arrival (servesim `jct_s`, Vidur `request_e2e_time`);
- ttft: first token − arrival (servesim `ttft_s`, Vidur `prefill_e2e_time`);
- tpot: (finish − first token) / (output tokens − 1), requests with ≥ 2 output tokens only
  (servesim `tpot_s`; for Vidur computed the same way from `request_e2e_time − prefill_e2e_time`,
  not its `decode_time_execution_plus_preemption_normalized`, which divides by all output tokens). Percentiles interpolate linearly
between order statistics (numpy's default), as `servesim trace stats` does. Pure Python (no numpy).
"""

import argparse
import csv
import glob
import math
import os
import sys


def percentile(sorted_xs, q):
    if not sorted_xs:
        return float("nan")
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def pearson(xs, ys):
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy)


def read_vidur(path, metric):
    files = sorted(glob.glob(os.path.join(path, "**", "request_metrics.csv"), recursive=True))
    if len(files) != 1:
        sys.exit(f"{path}: expected one request_metrics.csv, found {len(files)}")
    out = {}
    with open(files[0], newline="") as f:
        for r in csv.DictReader(f):
            e2e = float(r["request_e2e_time"])
            ttft = float(r["prefill_e2e_time"])
            n = int(float(r["request_num_decode_tokens"]))
            value = {"e2e": e2e, "ttft": ttft, "tpot": (e2e - ttft) / (n - 1) if n > 1 else None}[
                metric
            ]
            out[int(float(r["Request Id"]))] = (
                value,
                int(float(r["request_num_prefill_tokens"])),
                int(float(r["request_num_decode_tokens"])),
            )
    return out


def read_servesim(path, metric):
    out = {}
    with open(os.path.join(path, "requests.csv"), newline="") as f:
        for r in csv.DictReader(f):
            cell = r[{"e2e": "jct_s", "ttft": "ttft_s", "tpot": "tpot_s"}[metric]]
            out[int(r["id"])] = (
                float(cell) if cell != "" else None,
                int(r["input_tokens"]),
                int(r["output_tokens"]),
            )
    return out


def stats(label, e2e, ref=None):
    e2e = {i: v for i, v in e2e.items() if v[0] is not None}
    if ref is not None:
        ref = {i: v for i, v in ref.items() if v[0] is not None}
    ids = sorted(e2e)
    xs = sorted(v[0] for v in e2e.values())
    row = {
        "simulator": label,
        "requests": len(ids),
        "mean_s": sum(xs) / len(xs),
        "median_s": percentile(xs, 50),
        "p99_s": percentile(xs, 99),
        "mean_vs_vidur": "",
        "r": "",
    }
    if ref is not None:
        common = [i for i in ids if i in ref]
        for i in common:
            if e2e[i][1:] != ref[i][1:]:
                sys.exit(f"{label}: request {i} has lengths {e2e[i][1:]}, Vidur's {ref[i][1:]}")
        ref_mean = sum(v[0] for v in ref.values()) / len(ref)
        row["mean_vs_vidur"] = row["mean_s"] / ref_mean - 1.0
        row["r"] = pearson([e2e[i][0] for i in common], [ref[i][0] for i in common])
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vidur", required=True)
    ap.add_argument("--vidur-label", default="Vidur 0.0.26")
    ap.add_argument("--label", action="append", default=[], help="label per servesim dir, in order")
    ap.add_argument("--metric", choices=["e2e", "ttft", "tpot"], default="e2e")
    ap.add_argument("--csv", help="append the rows to this CSV (header written when new)")
    ap.add_argument("--tag", default="", help="a first column for --csv rows (e.g. vllm,2)")
    ap.add_argument("servesim", nargs="+")
    args = ap.parse_intermixed_args()

    ref = read_vidur(args.vidur, args.metric)
    rows = [stats(args.vidur_label, ref)]
    for k, d in enumerate(args.servesim):
        label = args.label[k] if k < len(args.label) else d
        rows.append(stats(label, read_servesim(d, args.metric), ref))

    name = {"e2e": "E2E", "ttft": "TTFT", "tpot": "TPOT"}[args.metric]
    fmt = ".2f" if args.metric == "e2e" else ".4f"
    print(f"| simulator | requests | mean {name} (s) | median (s) | p99 (s) | mean vs Vidur | r |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        diff = f"{r['mean_vs_vidur'] * 100:+.1f}%" if r["mean_vs_vidur"] != "" else "—"
        corr = f"{r['r']:.3f}" if r["r"] != "" else "—"
        print(
            f"| {r['simulator']} | {r['requests']} | {r['mean_s']:{fmt}} | {r['median_s']:{fmt}} "
            f"| {r['p99_s']:{fmt}} | {diff} | {corr} |"
        )
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["tag", "metric", *rows[0].keys()])
            for r in rows:
                w.writerow([args.tag, args.metric, *r.values()])


if __name__ == "__main__":
    main()
