"""End to end (JPEG files on disk -> labels) against the model alone, in one process, one run.

Usage:
    python benchmarks/end_to_end.py [--models l1 bundled] [--images 512] [--batch-size 64] [--workers N]
        [--device cpu|cuda] [--dtype float32|bfloat16] [--optimize] [--draft] [--decode cpu|gpu] [--rounds 3]
        [--write benchmarks/results/end_to_end.json]

The images are 640x480 JPEGs (quality 90) made from the photos in ../shared/fixtures/images, written to a
temporary folder. For each model:
- "model only": `classifier.logits_from_pixels` on one batch of preprocessed images already on the device,
  repeated (images/s; on CUDA synchronized);
- "end to end": `efficientformer.bulk.runner.predict_paths` over the files (decode, resize, crop in worker
  processes, lookup table, copy, model, top-5, records written to a .jsonl file), with `--workers` processes
  (default: one per core but one) and with 0 (everything in the main process); with `--decode gpu`
  (CUDA only) the files are read by `--workers` processes and decoded, resized and normalized on the GPU
  (`efficientformer.preprocessing.gpu_decode`), timed once per round with those processes;
and the ratio end-to-end / model-only. The three are timed in interleaved rounds (`--rounds`), keeping the best
of each, so that a burst of load from other processes on a shared machine hits one round, not one figure.
"l1" is EfficientFormer-L1 with random weights (1000 classes, 224x224:
the released checkpoints' preprocessing), "bundled" the package's Fashion-MNIST model (96x96).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "images"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png")


def make_jpegs(folder: Path, count: int) -> list[str]:
    """`count` distinct 640x480 JPEG files (the fixture photos resized, each copy shifted by a pixel so no two
    files are equal)."""
    from concurrent.futures import ThreadPoolExecutor

    sources = [Image.open(FIXTURES / name).convert("RGB").resize((660, 500), Image.BICUBIC) for name in PHOTOS]

    def write(i: int) -> str:
        source = sources[i % len(sources)]
        dx, dy = (i // len(sources)) % 20, (i // len(sources) // 20) % 20
        path = folder / f"{i:06d}.jpg"
        source.crop((dx, dy, dx + 640, dy + 480)).save(path, quality=90)
        return str(path)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow encodes without the GIL: seconds on the H200 host
        return list(pool.map(write, range(count)))


def build(name: str, device: str, dtype: str, optimized: bool):
    from efficientformer import ImageClassifier
    from efficientformer.bundled import default_model_path
    from efficientformer.checkpoints.folder import DEFAULT, processor_for
    from efficientformer.factory import create_model

    if name == "bundled":
        classifier = ImageClassifier.from_pretrained(default_model_path(), device=device)
    else:
        classifier = ImageClassifier(create_model(name, seed=0), processor_for(DEFAULT), device=device)
    if dtype == "bfloat16" and not optimized:
        classifier.model.to(torch.bfloat16)
    if optimized:
        from efficientformer.deploy.optimize import optimize

        classifier.model = optimize(classifier.model, device=device,
                                    dtype="bf16" if dtype == "bfloat16" else "fp32")
    return classifier


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_only(classifier, paths: list[str], batch_size: int, device: str, seconds: float) -> float:
    """Images/s of the model alone on one preprocessed batch already on the device."""
    from efficientformer.bulk.loader import prepare

    batch = prepare((paths * (batch_size // len(paths) + 1))[:batch_size], classifier.processor)
    pixels = classifier.pixels_from_8bit(batch.crops)
    pixels = pixels.to(device)
    for _ in range(3):
        classifier.logits_from_pixels(pixels)
    sync(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        classifier.logits_from_pixels(pixels)
        runs += 1
    sync(device)
    return runs * batch_size / (time.perf_counter() - start)


def end_to_end(classifier, paths: list[str], batch_size: int, workers: int, folder: Path,
               draft: bool = False, decode: str = "cpu") -> float:
    from efficientformer.bulk.runner import predict_paths

    output = folder / f"out-{workers}-{time.monotonic_ns()}.jsonl"
    start = time.perf_counter()
    result = predict_paths(classifier, paths, top_k=5, batch_size=batch_size, workers=workers, output=output,
                           keep=False, draft=draft, decode=decode)
    elapsed = time.perf_counter() - start
    if result.failed:
        raise RuntimeError(f"{len(result.failed)} images failed: {result.failed[0]}")
    with open(output, encoding="utf-8") as handle:
        lines = sum(1 for _ in handle)
    assert lines == len(paths), (lines, len(paths))
    return len(paths) / elapsed


def decode_only(classifier, paths: list[str], batch_size: int, workers: int) -> float:
    """Images/s of the CPU loader alone (`bulk.loader.batches`: decode, resize, crop in `workers` processes),
    no model: what the data path can feed at most."""
    from efficientformer.bulk.loader import batches

    start = time.perf_counter()
    count = sum(len(batch.names) for batch in batches(paths, batch_size, classifier.processor, workers))
    assert count == len(paths), (count, len(paths))
    return count / (time.perf_counter() - start)


def end_to_end_key(decode: str, workers: int) -> str:
    """The results key of an end-to-end figure (CPU decoding keeps the names earlier results files use)."""
    if decode == "gpu":
        return f"end_to_end_gpu_decode_{workers}_readers_images_per_s"
    return f"end_to_end_{workers}_workers_images_per_s"


def machine() -> str:
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from efficientformer.preprocessing.resize import usable_cores

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{name}, {usable_cores()} usable cores{gpu}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["l1", "bundled"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="default: one per usable core but one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--optimize", action="store_true", help="run efficientformer.deploy.optimize's network")
    parser.add_argument("--draft", action="store_true", help="decode at a reduced JPEG DCT scale (not exact)")
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: nvJPEG decoding and resizing on the GPU (--device cuda; --workers reading "
                             "processes)")
    parser.add_argument("--seconds", type=float, default=10.0, help="model-only timing length per model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--no-serial", action="store_true",
                        help="skip the 0-workers run (slow on a many-core GPU host) and time the loader alone instead")
    parser.add_argument("--write", default=None, help="write the results as json to this path")
    args = parser.parse_args(argv)
    if args.decode == "gpu" and (not args.device.startswith("cuda") or args.draft):
        parser.error("--decode gpu needs --device cuda and does not combine with --draft")
    from efficientformer.bulk.loader import default_workers

    workers = args.workers if args.workers is not None else max(1, default_workers(10 ** 9, 1))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_jpegs(folder, args.images)
        for name in args.models:
            classifier = build(name, args.device, args.dtype, args.optimize)
            # warm-up: compiles, CUDA graphs, nvJPEG's decoder and the resize weights of these sizes
            end_to_end(classifier, paths[:args.batch_size * 2], args.batch_size, 0, folder, decode=args.decode)
            # and the worker processes started, as a service or a long job has them
            end_to_end(classifier, paths[:args.batch_size * 2], args.batch_size, workers, folder, decode=args.decode)
            row = {"model": name, "batch_size": args.batch_size, "images": args.images, "rounds": args.rounds,
                   "decode": args.decode}
            keys = ["model_only_images_per_s", end_to_end_key(args.decode, workers)]
            if args.decode == "cpu" and not args.no_serial:  # GPU decoding: no "0 workers" run
                keys.append(end_to_end_key("cpu", 0))
            loader_key = f"decode_only_{workers}_workers_images_per_s"
            if args.decode == "cpu" and args.no_serial:
                row[loader_key] = 0.0
            for key in keys:
                row[key] = 0.0
            for _ in range(args.rounds):  # interleaved, best of each: a burst of load elsewhere hits one round
                row[keys[0]] = max(row[keys[0]], model_only(classifier, paths, args.batch_size, args.device,
                                                            args.seconds / args.rounds))
                for key, count in zip(keys[1:], (workers, 0)):
                    row[key] = max(row[key], end_to_end(classifier, paths, args.batch_size, count, folder,
                                                        args.draft, args.decode))
                if loader_key in row:
                    row[loader_key] = max(row[loader_key], decode_only(classifier, paths, args.batch_size, workers))
            best = max(row[key] for key in keys[1:])
            row["end_to_end_over_model_only"] = best / row["model_only_images_per_s"]
            results.append(row)
            print(json.dumps(row), flush=True)
    info = {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "Pillow": PIL.__version__, "torch_threads": torch.get_num_threads(),
            "device": args.device, "dtype": args.dtype, "optimize": args.optimize, "draft": args.draft,
            "decode": args.decode, "workers": workers,
            "command": "python benchmarks/end_to_end.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    print(json.dumps(info))
    if args.decode == "cpu":
        columns = [(end_to_end_key("cpu", workers), f"end to end, {workers} workers")]
        columns.append((f"decode_only_{workers}_workers_images_per_s", f"loader alone, {workers} workers")
                       if args.no_serial else (end_to_end_key("cpu", 0), "end to end, 0 workers"))
    else:
        columns = [(end_to_end_key("gpu", workers), f"end to end, GPU decoding, {workers} reading processes")]
    print("| model | model only (img/s) | " + " | ".join(f"{title} (img/s)" for _, title in columns)
          + " | best / model only |")
    print("|---|---:|" + "---:|" * len(columns) + "---:|")
    for row in results:
        print(f"| {row['model']} | {row['model_only_images_per_s']:.1f} | "
              + " | ".join(f"{row[key]:.1f}" for key, _ in columns)
              + f" | {row['end_to_end_over_model_only']:.0%} |")
    if args.write:
        from efficientformer.fileio import write_json

        write_json(args.write, {"info": info, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
