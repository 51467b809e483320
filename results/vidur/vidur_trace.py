#!/usr/bin/env python3
"""Convert a canonical servesim trace (arrival_s,input_tokens,output_tokens) into the trace-replay CSV
that Vidur 0.0.26's `trace_replay` request generator reads (Date,Time,PromptTokenCount,
CompletionTokenCount; `vidur/request_generator/trace_replay_request_generator.py`).

Both simulators then see the same arrival times and lengths. A Vidur request of n decode tokens
emits its first token with the prefill, as a servesim request of output_tokens = n does, so the
lengths are copied unchanged. Usage: vidur_trace.py IN.csv OUT.csv
"""
import csv
import sys

DATE = "2023-11-16"  # any fixed value: the generator keeps the rows whose Date equals its --date


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f, open(dst, "w", newline="") as g:
        rows = csv.DictReader(f)
        out = csv.writer(g)
        out.writerow(["Date", "Time", "PromptTokenCount", "CompletionTokenCount"])
        for r in rows:
            out.writerow([DATE, r["arrival_s"], r["input_tokens"], r["output_tokens"]])


if __name__ == "__main__":
    main()
