#!/usr/bin/env python3
"""Markdown pivot tables from a servesim sweep.csv (the tables in results/README.md).

Each cell is the mean over seeds (and over any axis not named) of one metric column.

    python3 results/tables.py DIR/sweep.csv --metric jct_mean_s --rows policy --cols rate
    python3 results/tables.py DIR/sweep.csv --metric preemptions --fmt .0f --where rate=1.5

--rows and --cols take comma-separated column names; --where keeps rows whose column equals the value
(repeatable). Runs with a non-empty `error` column are shown as "error" (and not averaged). Standard
library only.
"""

import argparse
import csv
import sys
from collections import OrderedDict


def sort_key(v):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_csv")
    ap.add_argument("--metric", required=True, help="sweep.csv column averaged in each cell")
    ap.add_argument("--rows", default="policy", help="column(s) naming the table rows")
    ap.add_argument("--cols", default="rate", help="column(s) naming the table columns")
    ap.add_argument("--where", action="append", default=[], help="COLUMN=VALUE filter")
    ap.add_argument("--fmt", default=".2f", help="number format of a cell (Python format spec)")
    ap.add_argument("--col-suffix", default="", help="appended to each column heading (e.g. ' req/s')")
    a = ap.parse_args()

    with open(a.sweep_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"error: {a.sweep_csv}: no runs")
    row_keys = a.rows.split(",")
    col_keys = a.cols.split(",")
    for k in row_keys + col_keys + [a.metric]:
        if k not in rows[0]:
            sys.exit(f"error: {a.sweep_csv}: no column '{k}' (columns: {', '.join(rows[0])})")
    for w in a.where:
        k, _, v = w.partition("=")
        if k not in rows[0]:
            sys.exit(f"error: --where {w}: no column '{k}'")
        rows = [r for r in rows if r[k] == v]

    cells = {}
    row_order = OrderedDict()
    col_order = set()
    for r in rows:
        rk = " / ".join(r[k] for k in row_keys)
        ck = tuple(r[k] for k in col_keys)
        row_order.setdefault(rk, None)
        col_order.add(ck)
        cell = cells.setdefault((rk, ck), [])
        v = r[a.metric]
        v = {"true": "1", "false": "0"}.get(v, v)  # `stable` averages to the stable fraction
        cell.append(None if r.get("error") else float(v))
    cols = sorted(col_order, key=lambda c: [sort_key(x) for x in c])

    head = " / ".join(row_keys)
    print(f"| {head} | " + " | ".join(" / ".join(c) + a.col_suffix for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for rk in row_order:
        out = []
        for c in cols:
            vals = cells.get((rk, c))
            if not vals:
                out.append("")
            elif any(v is None for v in vals):
                out.append("error")
            else:
                out.append(format(sum(vals) / len(vals), a.fmt))
        print(f"| `{rk}` | " + " | ".join(out) + " |")


if __name__ == "__main__":
    main()
