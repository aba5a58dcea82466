"""CPU benchmark of L1 fp32 (2 threads): our fused / compiled / onnxruntime modes against timm eager and
compiled, same weights, same process. The minimum over repeats is reported (robust on a shared machine).

    python benchmarks/cpu_run.py --out benchmarks/results/cpu_l1.json
"""
from __future__ import annotations

import argparse
import json

import torch

from efficientformer.benchmarking import (
                     environment,
                     format_table,
                     rows_as_dicts,
                     run_benchmark,
)

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="cpu_l1.json")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--modes", default="fused,fused+compile,onnxruntime,eager")
parser.add_argument("--timm-modes", default="eager,compile+cl,compile")
parser.add_argument("--min-time", type=float, default=3.0)
parser.add_argument("--tune-malloc", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
if args.tune_malloc:
    from efficientformer.benchmarking import tune_cpu_allocator

    print("mallopt tuned:", tune_cpu_allocator())
TIMM_EXTRA = {"compile": (False, "default", False)}
from efficientformer import benchmarking as bench

bench.TIMM_MODES.update(TIMM_EXTRA)
rows = run_benchmark("l1", device="cpu", batch_size=32, dtype="fp32", modes=args.modes.split(","),
                     timm_modes=args.timm_modes.split(","), min_time=args.min_time, stat="min")
table = format_table(rows, title=f"L1 224 fp32 cpu ({args.threads} threads, min of repeats)")
print(" ".join(f"{k}={v}" for k, v in environment().items()))
print(table)
json.dump({"environment": environment(), "rows": rows_as_dicts(rows), "table": table}, open(args.out, "w"), indent=1)
