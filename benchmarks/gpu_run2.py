"""Second device call: the Triton Meta4D kernel (correctness per stage shape, time against the PyTorch
ops), the padded stem conv, and L1/L3/L7 bf16 throughput of the Triton modes against timm's best.

    PYTHONPATH=src python benchmarks/gpu_run2.py --out $OUT --budget 420
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F


def kernel_check(log) -> list[dict]:
    from efficientformer.bench import build_model, time_call
    from efficientformer.inference import FusedMeta4D, fuse

    dev = torch.device("cuda")
    model = build_model("l1")
    fused = fuse(model).to(dev, torch.bfloat16).to(memory_format=torch.channels_last)
    out = []
    seen = set()
    sizes = {48: 56, 96: 28, 224: 14, 448: 7}
    for block in fused.convs:
        if not isinstance(block, FusedMeta4D):
            continue
        c = block.w1.shape[1]
        if c in seen:
            continue
        seen.add(c)
        x = torch.randn(256, c, sizes[c], sizes[c], device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ref32 = block.float()(x.float())
            block.to(torch.bfloat16)
            t_torch = time_call(lambda: block(x), dev, min_time=0.3)
            ref16 = block(x)
            block.enable_triton()
            got = block(x)
            t_tri = time_call(lambda: block(x), dev, min_time=0.3)
            block.triton = False
        err = float((got.float() - ref32).norm() / ref32.norm())
        err_torch = float((ref16.float() - ref32).norm() / ref32.norm())
        bytes_min = 2 * x.numel() * 2
        flops = 2 * 2 * x.numel() * block.w1.shape[0]
        row = {"channels": c, "hidden": block.w1.shape[0], "grid": sizes[c], "rel_err_triton": err, "rel_err_torch_bf16": err_torch,
               "torch_us": t_torch * 1e6, "triton_us": t_tri * 1e6,
               "triton_TBps_min_bytes": bytes_min / t_tri / 1e12, "triton_TFLOPs": flops / t_tri / 1e12}
        log(f"kernel {row}")
        out.append(row)
    return out


def stem_check(log) -> dict:
    from efficientformer.bench import time_call

    dev = torch.device("cuda")
    x = torch.randn(256, 3, 224, 224, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w3 = torch.randn(24, 3, 3, 3, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w8 = torch.zeros(24, 8, 3, 3, device=dev, dtype=torch.bfloat16)
    w8[:, :3] = w3
    w8 = w8.contiguous(memory_format=torch.channels_last)

    def padded():
        n = x.new_zeros(256, 224, 224, 8)
        n[..., :3] = x.permute(0, 2, 3, 1)
        return F.conv2d(n.permute(0, 3, 1, 2), w8, stride=2, padding=1)

    with torch.no_grad():
        t3 = time_call(lambda: F.conv2d(x, w3, stride=2, padding=1), dev, min_time=0.3)
        t8 = time_call(padded, dev, min_time=0.3)
        err = float((padded().float() - F.conv2d(x, w3, stride=2, padding=1).float()).abs().max())
    row = {"conv1_3ch_us": t3 * 1e6, "conv1_pad8_us_incl_pad": t8 * 1e6, "max_abs_diff": err}
    log(f"stem {row}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--budget", type=float, default=480)
    parser.add_argument("--cpu", default="1")
    parser.add_argument("--l1-modes", default="fused+triton+graphs,fused+triton+compile+graphs,fused+triton256+compile+graphs")
    parser.add_argument("--l1-timm", default="compile+cl+graphs")
    parser.add_argument("--big-modes", default="fused+triton+graphs,fused+triton+compile+graphs")
    args = parser.parse_args()
    started = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    log_file = open(os.path.join(args.out, "log2.txt"), "a", encoding="utf-8")

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - started:6.1f}s] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    from efficientformer.bench import (
        environment,
        format_table,
        rows_as_dicts,
        run_benchmark,
    )

    results: dict = {"environment": environment(), "tables": {}}
    path = os.path.join(args.out, "results2.json")

    def save():
        json.dump(results, open(path, "w"), indent=1, default=str)

    for name, fn in (("kernel", kernel_check), ("stem", stem_check)):
        try:
            results[name] = fn(log)
        except Exception as err:
            log(f"{name} failed: {type(err).__name__}: {err}")
    save()
    tables = []
    rows = run_benchmark("l1", device="cuda", batch_size=256, dtype="bf16", modes=args.l1_modes.split(","),
                         timm_modes=args.l1_timm.split(","), min_time=1.0, profile=("ours",),
                         budget_s=max(60.0, left() * 0.55), log=log)
    results["tables"]["l1"] = rows_as_dicts(rows)
    tables.append(format_table(rows, title="L1 224 bf16 cuda (run 2)"))
    save()
    for name in ("l3", "l7"):
        if left() < 150:
            break
        t_rows = run_benchmark(name, device="cuda", batch_size=256, dtype="bf16", latency=False, modes=[],
                               timm_modes=["compile+cl+graphs"], min_time=0.8, log=log)
        o_rows = run_benchmark(name, device="cuda", batch_size=256, dtype="bf16", latency=False, compare=None,
                               modes=args.big_modes.split(","), min_time=0.8, budget_s=max(10.0, left() - 60), log=log)
        rows = o_rows + t_rows
        results["tables"][name] = rows_as_dicts(rows)
        tables.append(format_table(rows, title=f"{name.upper()} 224 bf16 cuda (run 2)"))
        save()
    if args.cpu == "1" and left() > 40:
        from efficientformer import bench

        bench.TIMM_MODES["compile"] = (False, "default", False)
        torch.set_num_threads(2)
        cpu_rows = run_benchmark("l1", device="cpu", batch_size=32, dtype="fp32", modes=["fused", "onnxruntime"],
                                 timm_modes=["eager"], min_time=1.0, stat="min", budget_s=left() - 10, log=log)
        results["tables"]["cpu"] = rows_as_dicts(cpu_rows)
        save()
        if left() > 60:
            more = run_benchmark("l1", device="cpu", batch_size=32, dtype="fp32", modes=[], timm_modes=["compile"],
                                 min_time=1.0, stat="min", log=log)
            cpu_rows += more
            results["tables"]["cpu"] = rows_as_dicts(cpu_rows)
            save()
        if left() > 60:
            more = run_benchmark("l1", device="cpu", batch_size=32, dtype="fp32", modes=["fused+compile"], compare=None,
                                 min_time=1.0, stat="min", log=log)
            cpu_rows += more
            results["tables"]["cpu"] = rows_as_dicts(cpu_rows)
            save()
        tables.append(format_table(cpu_rows, title="L1 224 fp32 cpu, 2 threads (run 2)"))
    for table in tables:
        print(table)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
