"""Training speed of EfficientFormer-L1: ours against timm's, in the same loop and settings.

One loop for both models: random images already on the GPU (no data loading), AdamW, bf16 autocast,
channels-last memory, cross-entropy on the averaged class + distillation logits, `zero_grad`,
backward and optimizer step. Each model is warmed up, then timed over several windows with CUDA
synchronization; the median window gives images/s.

Usage (on a GPU machine with timm installed):
    python benchmarks/train_speed.py --batch-size 128 --image-size 224 --steps 30 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def our_l1() -> torch.nn.Module:
    from efficientformer import EfficientFormerConfig
    from efficientformer.models.pytorch import EfficientFormerForImageClassificationWithTeacher

    return EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.from_preset("l1"))


def timm_l1() -> torch.nn.Module:
    import timm

    return timm.create_model("efficientformer_l1", pretrained=False, num_classes=1000)


def logits_of(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return (out[0] + out[1]) / 2
    return out.logits


def measure(model: torch.nn.Module, batch_size: int, image_size: int, steps: int, windows: int,
            precision: str, compile_model: bool | str, profile: bool = False) -> dict:
    """Training images/s of `model` in the loop above; `compile_model`: False, True (torch.compile's default
    mode) or a torch.compile mode name ("reduce-overhead", "max-autotune-no-cudagraphs", ...). `profile`:
    also the top kernels of three steps by GPU time (`profile` key)."""
    device = torch.device("cuda")
    model = model.to(device).to(memory_format=torch.channels_last).train()
    if compile_model:
        mode = None if compile_model is True else compile_model
        step_model = torch.compile(model, mode=mode)
    else:
        step_model = model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(logits_of(step_model(x)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up: cuDNN autotuning, allocator, compilation
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        rates.append(batch_size * steps / (time.perf_counter() - start))
    params = sum(p.numel() for p in model.parameters())
    result = {"images_per_s": round(statistics.median(rates), 1), "windows": [round(r, 1) for r in rates],
              "params": params, "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    if profile:
        from efficientformer.benchmarking import profile_summary

        result["profile"] = profile_summary(step, device, top=40)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("train_speed.py needs a CUDA GPU", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, **vars(args)}
    for name, make in (("efficientformer (ours)", our_l1), ("timm", timm_l1)):
        try:
            torch.manual_seed(0)
            torch.cuda.reset_peak_memory_stats()
            results[name] = measure(make(), args.batch_size, args.image_size, args.steps, args.windows,
                                    args.precision, args.compile)
        except Exception as err:  # noqa: BLE001 - report and go on with the other model
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        print(name, results[name], flush=True)
    try:
        import timm

        results["timm_version"] = timm.__version__
    except ImportError:
        pass
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
