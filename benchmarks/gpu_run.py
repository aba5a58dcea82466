"""One device-machine call: hardware ceilings, FLOP counts, and the L1/L3/L7 benchmarks against timm.

Usage (on the GPU machine, from the repo root):
    PYTHONPATH=src python benchmarks/gpu_run.py --out $OUT [--budget 500] [--parts ceil,l1,l3,l7,cpu]
Writes results.json and log.txt under --out and prints the tables last.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def ceilings() -> dict:
    """Measured device-to-device copy bandwidth (read + write bytes) and bf16 matmul rate."""
    from efficientformer.bench import time_call

    dev = torch.device("cuda")
    a = torch.randn(1 << 28, device=dev, dtype=torch.bfloat16)  # 512 MiB
    b = torch.empty_like(a)
    t = time_call(lambda: b.copy_(a), dev, min_time=0.3)
    bw = 2 * a.numel() * 2 / t
    m = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    n = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    t = time_call(lambda: m @ n, dev, min_time=0.5)
    a = b = m = n = None
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": bw, "bf16_matmul_flop_per_s": 2 * 8192 ** 3 / t}


def flops_per_image(name: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from efficientformer.bench import build_model

    model = build_model(name)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))
    return float(counter.get_total_flops())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--budget", type=float, default=500)
    parser.add_argument("--parts", default="ceil,l1,l3,l7")
    parser.add_argument("--l1-modes", default="eager,fused,fused+compile,fused+compile+graphs")
    parser.add_argument("--l1-timm-modes", default="eager,eager+cl,compile+cl,compile+cl+graphs")
    parser.add_argument("--big-modes", default="fused+compile")
    parser.add_argument("--big-timm-modes", default="compile+cl")
    args = parser.parse_args()
    started = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    log_file = open(os.path.join(args.out, "log.txt"), "a", encoding="utf-8")

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - started:6.1f}s] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    from efficientformer.bench import (
        environment,
        format_table,
        rows_as_dicts,
        run_benchmark,
    )

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    results: dict = {"environment": environment(), "tables": {}}
    try:
        results["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu",
                                                "--format=csv"], capture_output=True, text=True).stdout
    except OSError:
        pass
    log(json.dumps(results["environment"]))
    parts = args.parts.split(",")
    if "ceil" in parts:
        results["ceilings"] = ceilings()
        log(f"ceilings {results['ceilings']}")
    for name in ("l1", "l3", "l7"):
        if name in parts:
            results.setdefault("flops_per_image", {})[name] = flops_per_image(name)
    log(f"flops {results.get('flops_per_image')}")

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    tables = []
    if "l1" in parts:
        rows = run_benchmark("l1", device="cuda", batch_size=256, dtype="bf16",
                             modes=args.l1_modes.split(","), timm_modes=args.l1_timm_modes.split(","),
                             min_time=1.0, profile=("ours", "timm"), budget_s=left() * 0.6, log=log)
        results["tables"]["l1"] = rows_as_dicts(rows)
        tables.append(format_table(rows, title="L1 224 bf16 cuda"))
        json.dump(results, open(os.path.join(args.out, "results.json"), "w"), indent=1, default=str)
    for name in ("l3", "l7"):
        if name in parts and left() > 60:
            rows = run_benchmark(name, device="cuda", batch_size=256, dtype="bf16", latency=False,
                                 modes=args.big_modes.split(","), timm_modes=args.big_timm_modes.split(","),
                                 min_time=1.0, budget_s=left() - 30, log=log)
            results["tables"][name] = rows_as_dicts(rows)
            tables.append(format_table(rows, title=f"{name.upper()} 224 bf16 cuda"))
            json.dump(results, open(os.path.join(args.out, "results.json"), "w"), indent=1, default=str)
    if "l1mx" in parts and left() > 90:
        rows = run_benchmark("l1", device="cuda", batch_size=256, dtype="bf16", compare=None,
                             modes=["fused+max-autotune", "fused+max-autotune+graphs"], min_time=1.0,
                             profile=("ours",), budget_s=left() - 60, log=log)
        results["tables"]["l1_max_autotune"] = rows_as_dicts(rows)
        tables.append(format_table(rows, title="L1 224 bf16 cuda, max-autotune"))
    if "cpu" in parts and left() > 60:
        torch.set_num_threads(2)
        rows = run_benchmark("l1", device="cpu", batch_size=32, dtype="fp32", modes=["fused", "fused+compile", "onnxruntime"],
                             timm_modes=["eager", "compile+cl"], min_time=1.0, budget_s=left() - 20, log=log)
        results["tables"]["cpu_l1"] = rows_as_dicts(rows)
        tables.append(format_table(rows, title="L1 224 fp32 cpu (2 threads)"))
    json.dump(results, open(os.path.join(args.out, "results.json"), "w"), indent=1, default=str)
    for table in tables:
        print(table)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
