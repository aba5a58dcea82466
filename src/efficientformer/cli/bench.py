"""Benchmark inference speed: our eager, fused, compiled and CUDA-graph modes, against timm's same
network with the same weights in the same process (when timm is installed; otherwise ours alone, with a
note saying so).

Prints a markdown table of batch-1 latency and large-batch throughput for every mode, with each mode's
relative error against our float32 eager logits; progress lines go to stderr.

Examples:
  efficientformer bench --model l1 --device cpu --batch-size 32
  efficientformer bench --model l1 --device cuda --batch-size 256
  efficientformer bench --model s0 --device cpu --threads 2 --batch-size 32
  efficientformer bench --model path/to/checkpoint --device cuda --modes fused default --compare none
"""

from __future__ import annotations

import argparse

HELP = "measure latency and throughput of every inference mode, against timm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="l1",
                        help="l1, l3, l7, V2's s0, s1, s2, l (random weights) or a checkpoint folder/file/hub id (default l1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default cpu)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch for throughput (default 256 on cuda, 32 on cpu); latency always uses 1")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                        help="compute dtype (default bf16 on cuda, fp32 on cpu, as optimize())")
    parser.add_argument("--image-size", type=int, default=224, help="square input side (default 224)")
    parser.add_argument("--compare", default="auto", choices=["auto", "timm", "none"],
                        help="run timm's same network too: auto (default: when timm is installed), timm (required), none")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="our modes: default (optimize()'s choice), eager, fused, fused+compile, "
                             "fused+compile+graphs, fused+triton+compile+graphs, onnxruntime, ... "
                             "(default: eager fused fused+compile on cpu, fused default on cuda)")
    parser.add_argument("--timm-modes", nargs="+", default=None,
                        help="timm modes: eager eager+cl compile+cl max-autotune+cl compile+cl+graphs "
                             "(default: eager compile+cl on cpu, eager compile+cl+graphs on cuda)")
    parser.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency")
    parser.add_argument("--no-throughput", action="store_true", help="skip the large-batch throughput")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per measurement (default 0.5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="cpu: keep freed buffers in the process (glibc mallopt) for every model measured")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..benchmarking import environment, format_table, quiet_compiler, rows_as_dicts, run_benchmark, tune_cpu_allocator
    from ..constants import MIN_IMAGE_SIZE
    from ..errors import InputError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.tune_malloc:
        tune_cpu_allocator()
    batch = args.batch_size or (256 if args.device == "cuda" else 32)
    if batch < 1 or args.image_size < MIN_IMAGE_SIZE:
        raise InputError(f"--batch-size must be at least 1 and --image-size at least {MIN_IMAGE_SIZE}.")
    quiet_compiler()  # the table, not Inductor's autotuning lines
    dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    rows = run_benchmark(args.model, device=args.device, batch_size=batch, dtype=dtype,
                         image_size=args.image_size, compare=args.compare,
                         modes=args.modes, timm_modes=args.timm_modes, latency=not args.no_latency,
                         throughput=not args.no_throughput, min_time=args.min_time,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
    env = environment()
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(format_table(rows, title=f"model={args.model} device={args.device} image={args.image_size}"))
    if args.json:
        from ..fileio import write_json  # atomic: a kill never leaves half a JSON file

        write_json(args.json, {"environment": env, "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                               "rows": rows_as_dicts(rows)}, indent=1)
    failed = [r for r in rows if r.note.startswith("failed")]
    return 1 if failed and len(failed) == len(rows) else 0
