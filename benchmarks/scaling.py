"""Several-GPU scaling of `efficientformer train` and `efficientformer predict` under torchrun (issue 19).

For each N in --gpus (on CUDA, those the machine has) it runs, as subprocesses of
`torchrun --standalone --nproc-per-node N -m efficientformer ...`:

- training, the `train` command's own loop, on two sources: a folder of 640x480 JPEGs written here from the
  fixture photos (`end_to_end.make_jpegs`, one sub-folder per class, decoded by the loader's worker processes)
  and `synthetic:CLASSES:COUNT` (random images in memory: the loop without decoding); L1 at 224, bf16,
  batch 256 per process, `--stop-after-steps STEPS`, each source big enough for the run to stay in its first
  epoch. images/s is the trainer's steady rate (OUTPUT/summary.json `images_per_s`: the log windows after
  each process's first steps, all processes together), and `replicas_identical` (every rank's parameters
  bitwise those of rank 0) comes from the same file;
- exact resume: the synthetic run again with `--save-every`, torchrun and every process under it SIGKILLed
  once a checkpoint exists (its workers run in sessions of their own: killing torchrun's process group alone
  leaves them training), then `--resume auto` to the same step; the weights of its last.pt against the
  uninterrupted run's (bitwise on CPU/gloo; on GPU the largest difference is what to look at);
- bulk prediction over the JPEG folder with `--output OUT.jsonl`: images/s (rank 0's rate from its last
  progress line, times N: from the start of its loader, after model loading; and all images over the
  command's wall time, start-up included), and whether the merged output holds every input exactly once.

Scaling efficiency is rate(N) / (N x rate(1)); `--baseline` takes rate(1) from an earlier results file when
this run has no N = 1. NVLink multicast stays off: every process started gets NCCL_NVLS_ENABLE=0 and
TORCH_SYMM_MEM_DISABLE_MULTICAST=1. The results go to benchmarks/results/<machine>_scaling_<Ns>_<date>.json,
and a Markdown table for BENCHMARKS.md is printed.

Usage:
    python benchmarks/scaling.py --gpus 1 2 4 8                      # H200 host: everything, real settings
    python benchmarks/scaling.py --gpus 1                            # one GPU: the baseline
    python benchmarks/scaling.py --gpus 8 --baseline benchmarks/results/h200x1_scaling_1_<date>.json
    python benchmarks/scaling.py --device cpu --backend gloo --gpus 1 2 --image-size 32 --batch-size 4 \\
        --steps 8 --log-every 1 --workers 0 --predict-model ../shared/fixtures/hf-tiny \\
        --train-args "--depths 1,1,1,1 --hidden-sizes 8,16,24,32 --num-attention-heads 2 --key-dim 8"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

# NVLink multicast (NVLS, symmetric memory) stays off on the H200 hosts: set in every process started here
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
PROGRESS_LINE = re.compile(r"predicting (\d+)/(\d+).*?, ([0-9.]+) images/s")


# ------------------------------------------------------------------------------------------ processes
def child_env() -> dict[str, str]:
    """This environment, with multicast off and the repository's src/ importable (`-m efficientformer`)."""
    env = dict(os.environ, **NO_MULTICAST)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def torchrun(n: int, args: list[str]) -> list[str]:
    """`torchrun --standalone --nproc-per-node N -m efficientformer ARGS`, with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
            "-m", "efficientformer", *args]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc): torchrun starts each worker in a session of its own, so
    killing torchrun's process group would leave the workers training."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process under it at once, as a lost machine would stop them."""
    for each in process_tree(pid):
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass


def processes_naming(text: str) -> list[int]:
    """The processes whose command line holds `text` (still alive, or not yet reaped)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def run_logged(cmd: list[str], log: Path, timeout: float, kill_when=None) -> tuple[bool, float]:
    """Run `cmd` with its output to `log`; (killed by us, wall seconds).

    `kill_when()` is polled while it runs: when it turns true, torchrun, its workers and theirs get SIGKILL.
    A non-zero exit that was not ours raises RuntimeError with the log's end.
    """
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write("$ " + shlex.join(cmd) + "\n")
        handle.flush()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=child_env())
        killed = False
        try:
            while proc.poll() is None:
                if time.perf_counter() - start > timeout:
                    kill_tree(proc.pid)
                    proc.wait()
                    raise RuntimeError(f"{cmd[-1]}... ran past {timeout:.0f} s; see {log}")
                if kill_when is not None and kill_when():
                    kill_tree(proc.pid)
                    killed = True
                    break
                time.sleep(0.01)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): nothing left behind
                kill_tree(proc.pid)
            proc.wait()
    seconds = time.perf_counter() - start
    if proc.returncode != 0 and not killed:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"exit code {proc.returncode}: {shlex.join(cmd)}\n{tail}")
    return killed, seconds


# ------------------------------------------------------------------------------------------------ data
def make_train_folder(root: Path, count: int, classes: int, photos: str | None = None) -> Path:
    """`count` (rounded up to whole classes) 640x480 JPEGs in `classes` class folders (the same photos in
    each: speed, not accuracy); a folder of a --work used before is kept when it holds that many."""
    import end_to_end

    if photos:  # the fixture photos elsewhere (a GPU machine gets the repository without ../shared)
        end_to_end.FIXTURES = Path(photos)
    per_class = -(-count // classes)
    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == per_class * classes:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for k in range(classes):
        (root / f"class_{k:03d}").mkdir(parents=True, exist_ok=True)
        end_to_end.make_jpegs(root / f"class_{k:03d}", per_class)
    return root


def make_predict_model(name: str, folder: Path) -> Path:
    """A random-weights `name` preset (seeded), saved with the released checkpoints' preprocessing."""
    from efficientformer.checkpoints.folder import DEFAULT
    from efficientformer.factory import create_model

    create_model(name, seed=0).save_pretrained(str(folder), processor=DEFAULT)
    return folder


# -------------------------------------------------------------------------------------------- training
def train_command(opts, n: int, data: str, out: Path, *extra: str) -> list[str]:
    return torchrun(n, ["train", data, "--output", str(out), "--model", opts.model, "--image-size",
                        str(opts.image_size), "--batch-size", str(opts.batch_size), "--precision", opts.precision,
                        "--stop-after-steps", str(opts.steps), "--log-every", str(opts.log_every), "--workers",
                        str(workers_for(opts, n)), "--device", opts.device, "--seed", "0", "--no-progress",
                        *shlex.split(opts.train_args), *extra])


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def measure_train(opts, n: int, data: str, out: Path) -> dict:
    """One training run: the trainer's steady images/s and its replica check."""
    shutil.rmtree(out, ignore_errors=True)  # a --work folder used before: no old checkpoint or summary
    _, wall = run_logged(train_command(opts, n, data, out), out.with_suffix(".log"), opts.timeout)
    summary = summary_of(out)
    return {"images_per_s": summary["images_per_s"], "replicas_identical": summary.get("replicas_identical"),
            "steps": summary["global_step"], "wall_s": round(wall, 1), "output": str(out)}


def weights_difference(a: Path, b: Path) -> dict:
    """Bitwise equality and the largest absolute difference of two checkpoints' model weights."""
    from efficientformer.training.checkpoint import load_checkpoint_file

    first, second = load_checkpoint_file(a)["model"], load_checkpoint_file(b)["model"]
    if first.keys() != second.keys():
        return {"bitwise_equal": False, "max_abs_diff": None, "note": "different weight names"}
    equal = all(first[k].equal(second[k]) for k in first)
    diffs = [(first[k].double() - second[k].double()).abs().max().item() for k in first
             if first[k].is_floating_point() and first[k].numel()]
    return {"bitwise_equal": equal, "max_abs_diff": max(diffs, default=0.0)}


def resume_check(opts, n: int, data: str, reference: Path, out: Path) -> dict:
    """Kill a run once it has a checkpoint, resume it to the same step, compare with `reference`'s weights."""
    from efficientformer.training.checkpoint import load_checkpoint_file

    shutil.rmtree(out, ignore_errors=True)
    last = out / "last.pt"
    save_every = str(opts.save_every or max(1, opts.steps // 4))
    killed, _ = run_logged(train_command(opts, n, data, out, "--save-every", save_every),
                           out.with_suffix(".killed.log"), opts.timeout, kill_when=last.is_file)
    deadline = time.monotonic() + 10  # SIGKILLed processes can take a moment to go (a write to finish)
    while (survivors := processes_naming(str(out))) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = load_checkpoint_file(last)["global_step"] if last.is_file() else None
    run_logged(train_command(opts, n, data, out, "--save-every", save_every, "--resume", "auto"),
               out.with_suffix(".resumed.log"), opts.timeout)
    summary = summary_of(out)
    # survivors: processes of the killed run still there (0 unless some escaped the kill, as torchrun's
    # workers escape a kill of its process group)
    return {"killed": killed, "killed_at_step": killed_at, "survivors": len(survivors),
            "steps": summary["global_step"], "replicas_identical": summary.get("replicas_identical"),
            **weights_difference(reference / "last.pt", last)}


# ---------------------------------------------------------------------------------------------- predict
def measure_predict(opts, n: int, folder: Path, model: Path, out: Path) -> dict:
    """Bulk prediction over `folder` into a fresh `out`: images/s and every input exactly once."""
    for stale in [out, *out.parent.glob(out.stem + ".part-*")]:
        stale.unlink(missing_ok=True)
    cmd = torchrun(n, ["predict", str(folder), "--model", str(model), "--device", opts.device, "--batch-size",
                       str(opts.predict_batch_size or opts.batch_size), "--workers", str(workers_for(opts, n)),
                       "--output", str(out)])
    log = out.with_suffix(".log")
    _, wall = run_logged(cmd, log, opts.timeout)
    expected = Counter(os.path.realpath(p) for p in folder.rglob("*.jpg"))
    got = Counter(os.path.realpath(json.loads(line)["image"]) for line in out.read_text().splitlines())
    progress = PROGRESS_LINE.findall(log.read_text(errors="replace"))
    done, total, rate = progress[-1] if progress else (0, 0, None)  # rank 0's last line: its shard, at the end
    steady = round(float(rate) * n, 1) if rate is not None and int(done) == int(total) else None
    images = sum(expected.values())
    return {"images": images, "images_per_s": steady, "wall_s": round(wall, 1),
            "wall_images_per_s": round(images / wall, 1), "exactly_once": got == expected,
            "missing": len(expected - got), "duplicated": sum(c - 1 for c in got.values() if c > 1),
            "unexpected": len(set(got) - set(expected)),
            "part_files_left": len(list(out.parent.glob(out.stem + ".part-*")))}


# ----------------------------------------------------------------------------------------------- report
def workers_for(opts, n: int) -> int:
    """Decoding processes per rank: --workers, else the cores shared out (one per rank kept for itself)."""
    if opts.workers is not None:
        return opts.workers
    return max(1, (os.cpu_count() or 1) // n - 1)


def machine(opts) -> dict:
    import torch

    from efficientformer.benchmarking import environment

    info = {**environment(), "host_cpus": os.cpu_count(), "platform": platform.platform(),
            "device": opts.device, "backend": opts.backend, **NO_MULTICAST}
    if opts.device == "cuda":
        info["gpus"] = torch.cuda.device_count()
        version = torch.cuda.nccl.version()  # a tuple (an int in old releases)
        info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return info


def add_efficiency(rows: list[dict], baseline: dict | None) -> None:
    """rate(N) / (N x rate(1)) for each measured figure, rate(1) from these rows or the baseline file's."""
    ones = [r for r in rows if r["gpus"] == 1] or ([baseline] if baseline else [])
    for row in rows:
        for part in ("train_jpeg", "train_synthetic", "predict"):
            one = (ones[0].get(part) or {}).get("images_per_s") if ones else None
            rate = (row.get(part) or {}).get("images_per_s")
            if one and rate:
                row[part]["efficiency"] = round(rate / (row["gpus"] * one), 3)


def markdown(results: dict) -> str:
    env, s = results["environment"], results["settings"]
    counts = sorted(set(s["workers"].values()))
    workers = str(counts[0]) if len(counts) == 1 else ", ".join(f"{w} at N={n}" for n, w in s["workers"].items())
    gpu = f"{env.get('gpus', '')} x {env['gpu']}, CUDA {env.get('cuda')}, NCCL {env.get('nccl')}" \
        if "gpu" in env else f"CPU ({env['host_cpus']} cores), {s['backend']}"
    lines = [f"Scaling, {results['date_utc']}: {gpu}; torch {env['torch']}, Python {env['python']}, "
             f"{env['host_cpus']} CPU cores; model {s['model']} at {s['image_size']}, {s['precision']}, batch "
             f"{s['batch_size']} per process, {s['steps']} steps (images/s after each process's first steps), "
             f"decoding processes per rank: {workers}; NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1.",
             "",
             "| processes | train, JPEG folder (img/s, eff.) | train, synthetic (img/s, eff.) | replicas identical "
             "| resume after kill | predict (img/s, eff.) | predict, wall (img/s) | every input once |",
             "|---|---|---|---|---|---|---|---|"]

    def rate(part: dict | None) -> str:
        if not part or part.get("images_per_s") is None:
            return "-"
        eff = part.get("efficiency")
        return f"{part['images_per_s']:,.0f}" + (f" ({100 * eff:.0f} %)" if eff is not None else "")

    for row in results["rows"]:
        same = [p.get("replicas_identical") for p in (row.get("train_jpeg"), row.get("train_synthetic"),
                                                     row.get("resume")) if p]
        same = "-" if row["gpus"] == 1 or not same else ("yes" if all(same) else "NO")
        res = row.get("resume")
        if not res:
            resumed = "-"
        elif not res["killed"]:
            resumed = "not killed in time"
        else:
            resumed = (f"killed at step {res['killed_at_step']}, " +
                       ("bitwise equal" if res["bitwise_equal"] else f"max diff {res['max_abs_diff']:.3g}"))
        pred = row.get("predict")
        once = "-" if not pred else ("yes" if pred["exactly_once"] else
                                     f"NO ({pred['missing']} missing, {pred['duplicated']} twice)")
        wall = f"{pred['wall_images_per_s']:,.0f}" if pred else "-"
        lines.append(f"| {row['gpus']} | {rate(row.get('train_jpeg'))} | {rate(row.get('train_synthetic'))} | {same} "
                     f"| {resumed} | {rate(pred)} | {wall} | {once} |")
    return "\n".join(lines)


def default_output(env: dict, date: str, gpus: list[int]) -> Path:
    """benchmarks/results/<machine>_scaling_<N values>_<date>.json, e.g. h200x8_scaling_1-2-4-8_2026-12-03.json."""
    tag = "cpu" if "gpu" not in env else f"{env['gpu'].split()[-1].lower()}x{env.get('gpus', 1)}"
    return ROOT / "benchmarks" / "results" / f"{tag}_scaling_{'-'.join(map(str, gpus))}_{date[:10]}.json"


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8], help="process counts N")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default=None,
                        help="the process group's: the train and predict commands take nccl on cuda, gloo on cpu")
    parser.add_argument("--model", default="l1")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256, help="per process")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--log-every", type=int, default=10, help="steps per timed window")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes per rank (default: cores/N - 1)")
    parser.add_argument("--train-args", default="", help="more `efficientformer train` flags, e.g. '--compile'")
    parser.add_argument("--save-every", type=int, default=0, help="resume check's checkpoints (default: steps/4)")
    parser.add_argument("--predict-model", default=None, help="model folder (default: random weights of --model)")
    parser.add_argument("--predict-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--predict-images", type=int, default=0,
                        help="JPEGs at least (default: what the longest training run takes); prediction reads all")
    parser.add_argument("--skip", nargs="*", default=[], choices=("jpeg", "synthetic", "resume", "predict"))
    parser.add_argument("--photos", default=None,
                        help="the fixture photos the JPEGs are made from (default: ../shared/fixtures/images)")
    parser.add_argument("--baseline", default=None, help="results file whose N=1 row gives rate(1)")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--write", default=None, help="results file (default: benchmarks/results/...; '-': none)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
    opts = parser.parse_args(argv)
    opts.argv = list(sys.argv[1:] if argv is None else argv)
    import torch

    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    wanted = "nccl" if opts.device == "cuda" else "gloo"
    if opts.backend not in (None, wanted):
        parser.error(f"--backend {opts.backend} with --device {opts.device}: the commands use {wanted} there")
    opts.backend = wanted
    if opts.device == "cuda":
        have = torch.cuda.device_count()
        opts.gpus = [n for n in opts.gpus if n <= have]
        if not opts.gpus:
            parser.error(f"this machine has {have} CUDA device(s), fewer than any of --gpus")
    if "resume" not in opts.skip and "synthetic" in opts.skip:
        parser.error("the resume check compares with the synthetic run; drop 'synthetic' from --skip")
    return opts


def run_all(opts, work: Path) -> dict:
    """Every measurement for every N; the results as written to the JSON file."""
    top = max(opts.gpus)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d_%H%M")
    jpegs = max((opts.steps + 1) * opts.batch_size * top, opts.predict_images)  # runs stay in their first epoch
    folder = None
    if not {"jpeg", "predict"} <= set(opts.skip):
        start = time.perf_counter()
        folder = make_train_folder(work / "jpegs", jpegs, opts.classes, opts.photos)
        print(f"{jpegs} JPEGs written in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    model = None
    if "predict" not in opts.skip:
        model = Path(opts.predict_model) if opts.predict_model else make_predict_model(opts.model, work / "model")
    rows = []
    for n in opts.gpus:
        row: dict = {"gpus": n}
        synthetic = f"synthetic:{opts.classes}:{(opts.steps + 1) * opts.batch_size * n}"
        if "jpeg" not in opts.skip:
            row["train_jpeg"] = measure_train(opts, n, str(folder), work / f"train_jpeg_{n}")
        if "synthetic" not in opts.skip:
            row["train_synthetic"] = measure_train(opts, n, synthetic, work / f"train_synthetic_{n}")
        if "resume" not in opts.skip:
            row["resume"] = resume_check(opts, n, synthetic, work / f"train_synthetic_{n}", work / f"resume_{n}")
        if "predict" not in opts.skip:
            row["predict"] = measure_predict(opts, n, folder, model, work / f"predict_{n}.jsonl")
        print(json.dumps(row), flush=True)
        rows.append(row)
    baseline = None
    if opts.baseline:
        baseline = next((r for r in json.loads(Path(opts.baseline).read_text())["rows"] if r["gpus"] == 1), None)
    add_efficiency(rows, baseline)
    settings = {k: getattr(opts, k) for k in ("gpus", "model", "image_size", "batch_size", "precision", "steps",
                                              "log_every", "classes", "train_args", "backend", "baseline")}
    settings.update(workers={n: workers_for(opts, n) for n in opts.gpus}, train_jpegs=jpegs,
                    predict_model=opts.predict_model or f"{opts.model} (random weights)")
    return {"date_utc": date, "environment": machine(opts), "settings": settings,
            "command": shlex.join(["benchmarks/scaling.py", *opts.argv]), "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    if opts.work:
        Path(opts.work).mkdir(parents=True, exist_ok=True)
        results = run_all(opts, Path(opts.work))
    else:
        with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
            results = run_all(opts, Path(tmp))
    if opts.write != "-":
        env, date = results["environment"], results["date_utc"]
        path = Path(opts.write) if opts.write else default_output(env, date, opts.gpus)
        from efficientformer.fileio import write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, results)  # atomic: a killed run leaves no half-written results file
        print(f"written to {path}", file=sys.stderr)
    results["markdown"] = markdown(results)
    print(results["markdown"])
    return results


if __name__ == "__main__":
    main()
