#!/usr/bin/env python3
"""Where the cost model misses on a live run's own batches: reads the iterations.csv of every
`runs/*/live/` under a `servesim fidelity` output folder and prints, per cell and batch kind
(decode-only by batch size, prefill-holding by prompt tokens, with copies), the number of
iterations and the median and mean of measured / predicted.

    python3 results/fidelity/batches.py results/fidelity/cpu-small-4x512
"""
import csv
import statistics
import sys
from pathlib import Path


def bucket(row):
    pt = int(row["prefill_tokens"])
    if pt > 0:
        for hi in (64, 256, 1024):
            if pt <= hi:
                return f"prefill <= {hi} tokens"
        return "prefill > 1024 tokens"
    n = int(row["decode_requests"])
    for hi in (1, 4, 8, 16):
        if n <= hi:
            return f"decode {hi if hi == 1 else '<= ' + str(hi)} seqs"
    return "decode > 16 seqs"


def main(root):
    for live in sorted(Path(root).glob("runs/*/live")):
        groups = {}
        with open(live / "iterations.csv") as f:
            for row in csv.DictReader(f):
                if not row["predicted_s"]:
                    continue
                ratio = float(row["duration_s"]) / float(row["predicted_s"])
                groups.setdefault(bucket(row), []).append(ratio)
        print(f"## {live.parent.name}")
        print("| batches | iterations | median measured/predicted | mean |")
        print("|---|---:|---:|---:|")
        for k in sorted(groups):
            v = groups[k]
            print(f"| {k} | {len(v)} | {statistics.median(v):.3f} | {statistics.fmean(v):.3f} |")
        print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
