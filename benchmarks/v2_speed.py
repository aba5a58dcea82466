"""EfficientFormerV2 inference speed: our PyTorch classes against timm 1.0's `EfficientFormerV2`, same weights,
same process, interleaved rounds (minimum of each), eager and `torch.compile`; the largest output difference
shows both run the same network. Writes a JSON of the figures.

Usage:
    python benchmarks/v2_speed.py --device cpu --threads 2 --out benchmarks/results/v2_speed_cpu.json
    python benchmarks/v2_speed.py --device cuda --batches 1 256 --dtype bfloat16 --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def _timed(fn, x, rounds: int, device: str) -> float:
    """Seconds of the fastest of `rounds` calls."""
    best = float("inf")
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(x)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="s0", choices=("s0", "s1", "s2", "l"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the minimum is kept)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per round")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm

    import efficientformer
    from efficientformer.checkpoints.keys_v2 import convert_state_dict_v2

    torch.manual_seed(0)
    theirs = timm.create_model(f"efficientformerv2_{args.variant}").eval()
    ours = efficientformer.create_model(args.variant, seed=0)
    theirs.load_state_dict(convert_state_dict_v2(ours.state_dict(), "transformers", "timm"))
    dtype = getattr(torch, args.dtype)
    ours, theirs = ours.to(args.device, dtype), theirs.to(args.device, dtype)
    models = {"ours eager": lambda x: ours(x).logits, "timm eager": theirs}
    if args.compile:
        compiled_ours, compiled_theirs = torch.compile(ours, dynamic=False), torch.compile(theirs, dynamic=False)
        models.update({"ours compiled": lambda x: compiled_ours(x).logits, "timm compiled": compiled_theirs})
    machine = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    results: dict = {"variant": args.variant, "device": args.device, "dtype": args.dtype,
                     "threads": torch.get_num_threads(), "torch": torch.__version__, "timm": timm.__version__,
                     "efficientformer": efficientformer.__version__, "machine": machine, "rounds": args.rounds,
                     "batches": {}}
    with torch.inference_mode():
        for batch in args.batches:
            x = torch.randn(batch, 3, 224, 224, device=args.device, dtype=dtype)
            outputs = {name: fn(x).float() for name, fn in models.items()}  # warm-up (and compilation)
            for fn in models.values():
                fn(x)
            best = {name: float("inf") for name in models}
            for _ in range(args.rounds):
                for name, fn in models.items():
                    best[name] = min(best[name], _timed(fn, x, args.calls, args.device))
            reference = outputs["timm eager"]
            entry = {name: {"ms": best[name] * 1e3, "img_per_s": batch / best[name],
                            "max_abs_diff_vs_timm_eager": float((outputs[name] - reference).abs().max())}
                     for name in models}
            for mode in ("eager", "compiled"):
                if f"ours {mode}" in entry:
                    entry[f"speed ours/timm {mode}"] = best[f"timm {mode}"] / best[f"ours {mode}"]
            results["batches"][str(batch)] = entry
            times = ", ".join(f"{k} {v['ms']:.2f} ms" for k, v in entry.items() if isinstance(v, dict))
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in entry.items() if not isinstance(v, dict))
            print(f"batch {batch}: {times}; {ratios}", flush=True)
    if args.out:
        from efficientformer.fileio import write_text

        write_text(args.out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
