"""Per-image time of EfficientFormerImageProcessor against transformers 4.57's, in one process.

Usage (transformers optional; without it only our figures are printed):
    python benchmarks/bench_processor.py [--image PATH] [--runs 300] [--warmup 30] [--write benchmarks/results/processor.md]

Settings: the hub checkpoints' preprocessor_config.json (shortest edge 256, bicubic, center crop 224,
ImageNet mean/std), return_tensors="np". Both processors are timed alternately, run by run, so background
load hits both alike; the figure is the median of `--runs` calls after `--warmup` calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from efficientformer import EfficientFormerImageProcessor
from efficientformer.preprocessing.resize import default_threads

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
BATCH = 8
HUB_SETTINGS = dict(do_resize=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True,
                    crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
                    do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


NOTES = """How to read this:
- "CPU ms" is the process CPU time of each call; on a shared machine (load average above the core count) the
  wall-clock time includes waiting for a core, which penalises long calls more than short ones, so the CPU-time
  ratio is the figure to compare. On an idle machine the two agree.
- "ours" reproduces transformers' numbers exactly (max difference 0). The bicubic resize is Pillow's arithmetic
  (22-bit fixed-point weights, 8-bit intermediate, Pillow's order of passes) done as banded matrix products in
  numpy for the cropped samples only (`efficientformer.preprocessing.resample`): for a photo in float32, whose
  error has a proven bound (the taps of one output times float32's unit roundoff), the few samples (about
  0.04%) within that bound of a rounding edge recomputed exactly in integer arithmetic
  (`efficientformer.preprocessing.exact32`; tests compare with Pillow bit for bit on hundreds of sizes and on
  noise); the pixels are read from Pillow's memory without a copy (its Arrow export) and split into channels
  with whole-word shifts; rescale and normalize are transformers' own float64/float32 operations in three
  vector passes (checked once per setting against the table of all 256 levels, bit for bit), written straight
  into the channels-first output. The work arrays are kept per thread in one arena on 2 MB pages
  (`efficientformer.preprocessing.workspace`): fresh ones cost a page fault per 4 kB on every call, and 4 kB
  pages a page-table walk each once other work has evicted the caches.
- The interleaved rows run each call between the other libraries' calls (as in an application, the caches
  hold other data when a call starts); the back-to-back row repeats one call, caches warm.
- Run with `OPENBLAS_NUM_THREADS=1` so that both sides use one core: numpy's BLAS would otherwise start a
  second thread for the matrix products, which gains little wall-clock time here and spins on the other core.
- The batch row spreads the images of one call over threads (`num_threads=None`: the usable cores, at most 4).
  With the numpy resize it gains little or nothing per image (its many small numpy calls hold the GIL in
  between, and on a machine shared with other jobs the second core is often busy); `num_threads` defaults to
  1 so that the processor never competes with the model's own threads. It helps more for the filters Pillow
  still computes (lanczos, hamming).
"""


def transformers_processor():
    """transformers' EfficientFormerImageProcessor with the hub settings, or None when not installed."""
    try:
        import transformers
        from transformers.utils import logging

        logging.set_verbosity_error()
        try:
            from transformers.models.deprecated.efficientformer import EfficientFormerImageProcessor as HF
        except ImportError:
            from transformers.models.efficientformer import EfficientFormerImageProcessor as HF
    except Exception as err:  # noqa: BLE001 - any import failure means "skip"
        print(f"transformers not available ({type(err).__name__}: {err}); timing ours only.")
        return None, None
    return HF(**HUB_SETTINGS), transformers.__version__


def time_calls(calls: dict, runs: int, warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall-clock and process-CPU milliseconds of each zero-argument call.

    The calls are timed in turn, run by run (order reversed every other run), so background load hits all
    of them alike; CPU time leaves out the time the process waited for a core on a busy machine.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for run in range(runs):
        for name in (names if run % 2 == 0 else names[::-1]):
            start_cpu, start = time.process_time(), time.perf_counter()
            calls[name]()
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return ({n: statistics.median(v) for n, v in wall.items()}, {n: statistics.median(v) for n, v in cpu.items()})


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(FIXTURES / "images" / "astronaut_640x480.jpg"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--write", default=None, help="write a markdown report to this path")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    image = Image.open(args.image)
    image.load()
    ours = EfficientFormerImageProcessor(**HUB_SETTINGS)
    ours_batch = EfficientFormerImageProcessor(**HUB_SETTINGS, num_threads=None)  # all cores, at most 4
    batch = [image] * BATCH
    theirs, hf_version = transformers_processor()
    short = 256
    out_w, out_h = (short, int(short * image.height / image.width)) if image.width <= image.height else (
        int(short * image.width / image.height), short)

    calls = {
        "ours": lambda: ours(image, return_tensors="np"),
        "Pillow resize alone": lambda: image.resize((out_w, out_h), 3),
        "ours from file path": lambda: ours(args.image, return_tensors="np"),
        "ours batch": lambda: ours_batch(batch, return_tensors="np"),
    }
    if theirs is not None:
        calls["transformers"] = lambda: theirs(image, return_tensors="np")
        calls["transformers from file path"] = lambda: theirs(Image.open(args.image).convert("RGB"),
                                                            return_tensors="np")
        calls["transformers batch"] = lambda: theirs(batch, return_tensors="np")
    load_before = load_average()
    ms, cpu_ms = time_calls(calls, args.runs, args.warmup)
    back_to_back = {name: time_calls({name: calls[name]}, args.runs, args.warmup) for name in ("ours", "transformers")
                    if name in calls}
    for times in (ms, cpu_ms):  # batch rows per image
        for name in ("ours batch", "transformers batch"):
            if name in times:
                times[name] /= BATCH

    info = (f"machine: {machine()}\npython {platform.python_version()}, numpy {np.__version__}, "
            f"Pillow {PIL.__version__}, transformers {hf_version or 'not installed'}")
    lines = [f"image: {Path(args.image).name} ({image.width}x{image.height}), settings: shortest_edge 256, "
             f"bicubic, crop 224, return_tensors='np'; median of {args.runs} runs after {args.warmup} warmup", info, ""]
    rows = [("decoded PIL image", "ours", "transformers"),
            ("file path (decode included)", "ours from file path", "transformers from file path"),
            (f"batch of {BATCH} decoded images, num_threads={default_threads()} (per image)", "ours batch",
             "transformers batch")]
    lines.append(f"1-minute load average before / after: {load_before:.1f} / {load_average():.1f}")
    lines.append("")
    lines.append("| input | ours ms (CPU ms) | transformers ms (CPU ms) | speed-up wall (CPU) |")
    lines.append("|---|---|---|---|")
    for label, mine, ref in rows:
        their = f"{ms[ref]:.3f} ({cpu_ms[ref]:.3f})" if ref in ms else "n/a"
        ratio = f"{ms[ref] / ms[mine]:.2f}x ({cpu_ms[ref] / cpu_ms[mine]:.2f}x)" if ref in ms else "n/a"
        lines.append(f"| {label} | {ms[mine]:.3f} ({cpu_ms[mine]:.3f}) | {their} | {ratio} |")
    if "transformers" in back_to_back:
        (mine_ms, mine_cpu), (ref_ms, ref_cpu) = ((back_to_back[n][0][n], back_to_back[n][1][n])
                                                  for n in ("ours", "transformers"))
        lines.append(f"| decoded PIL image, back to back (caches warm) | {mine_ms:.3f} ({mine_cpu:.3f}) | "
                     f"{ref_ms:.3f} ({ref_cpu:.3f}) | {ref_ms / mine_ms:.2f}x ({ref_cpu / mine_cpu:.2f}x) |")
    floor = "Pillow resize alone"
    lines.append(f"| Pillow's bicubic resize alone (all that transformers' numbers need from Pillow) | "
                 f"{ms[floor]:.3f} ({cpu_ms[floor]:.3f}) | | |")
    if theirs is not None:
        a = ours(image, return_tensors="np")["pixel_values"]
        b = theirs(image, return_tensors="np")["pixel_values"]
        lines += ["", f"max |ours - transformers| = {np.abs(a - b).max():.3g}"]
        share = cpu_ms["Pillow resize alone"] / cpu_ms["transformers"]
        lines += ["", f"Pillow's resize is {share:.0%} of transformers' CPU time; ours computes the same bytes without it "
                      "(`efficientformer.preprocessing.resample`)."]
    report = "\n".join(lines)
    print(report)
    if args.write:
        command = "python benchmarks/bench_processor.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if os.environ.get("OPENBLAS_NUM_THREADS"):
            command = f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} {command}"
        from efficientformer.fileio import write_text

        write_text(args.write, f"# Image processor speed\n\ncommand: `{command.strip()}` (transformers "
                                    f"installed beside this package)\n\n{report}\n\n{NOTES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
