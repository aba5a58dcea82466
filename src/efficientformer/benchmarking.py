"""Speed of EfficientFormer inference: ours (eager, fused, compiled, CUDA graphs) against timm's same
network with the same weights, in the same process.

`run_benchmark(...)` builds our `EfficientFormerForImageClassificationWithTeacher` (random but
realistic weights: BatchNorm statistics, layer scales and biases all non-trivial, or a checkpoint),
copies the weights into `timm.create_model("efficientformer_lX")` through `efficientformer.checkpoints.keys`
(timm's LayerNorm eps is set to the config's so both compute the same function; for EfficientFormerV2,
`"s0"` ..., into timm's `EfficientFormerV2` of the same shape through `checkpoints.keys_v2`), checks that every
mode's logits agree with our float32 eager model, then times each mode:

- latency: median time of one batch-1 call (ms), from CUDA events on a GPU, a monotonic clock on CPU;
- throughput: images per second at the large batch size (median over repeats).

timm is only needed for `compare="timm"`. Example:

    >>> from efficientformer.benchmarking import run_benchmark, format_table
    >>> rows = run_benchmark("l1", device="cpu", batch_size=8, modes=["eager", "fused"], compare=None)  # doctest: +SKIP
    >>> print(format_table(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .constants import DISTILLATION_HEAD
from .errors import ConfigError, InputError, MissingDependencyError, require
from .factory import create_model, randomize_

torch = require("torch", "torch", "efficientformer.benchmarking")
from torch import nn

# Our modes: name -> optimize() arguments (None = the unfused model as it is). Each names every speed-up it
# uses and switches the others off, since optimize() turns them on by default on CUDA; "default" is
# optimize()'s own choice for the device and dtype.
_OFF: dict[str, Any] = {"compile": False, "cuda_graphs": False, "kernels": None}
OUR_MODES: dict[str, dict[str, Any] | None] = {
    "eager": None,
    "default": {},
    "fused": {**_OFF},
    "fused+compile": {**_OFF, "compile": "default"},
    "fused+max-autotune": {**_OFF, "compile": "max-autotune-no-cudagraphs"},
    "fused+compile+graphs": {**_OFF, "compile": "default", "cuda_graphs": True},
    "fused+max-autotune+graphs": {**_OFF, "compile": "max-autotune-no-cudagraphs", "cuda_graphs": True},
    "fused+triton": {**_OFF, "kernels": "triton"},
    "fused+triton+graphs": {**_OFF, "kernels": "triton", "cuda_graphs": True},
    "fused+triton+compile": {**_OFF, "kernels": "triton", "compile": "default"},
    "fused+triton+compile+graphs": {"kernels": "triton", "compile": "default", "cuda_graphs": True},
    # the run-3 configuration, before attention="matmul" and gelu_epilogue became the CUDA defaults (A/B)
    "fused+triton+sdpa+compile+graphs": {"kernels": "triton", "attention": "sdpa", "gelu_epilogue": False,
                                         "compile": "default", "cuda_graphs": True},
    "fused+triton256+compile+graphs": {"kernels": "triton", "triton_max_channels": 256, "compile": "default",
                                       "cuda_graphs": True},
    "onnxruntime": {},
}
# timm's modes: name -> (channels_last, torch.compile mode or None, CUDA graphs)
TIMM_MODES: dict[str, tuple[bool, str | None, bool]] = {
    "eager": (False, None, False),
    "eager+cl": (True, None, False),
    "compile+cl": (True, "default", False),
    "max-autotune+cl": (True, "max-autotune-no-cudagraphs", False),
    "compile+cl+graphs": (True, "default", True),
}
CUDA_ONLY = {"fused+compile+graphs", "fused+max-autotune+graphs", "compile+cl+graphs", "fused+triton",
             "fused+triton+graphs", "fused+triton+compile", "fused+triton+compile+graphs",
             "fused+triton+sdpa+compile+graphs",
             "fused+triton256+compile+graphs"}
# What runs when no modes are named: our default next to the plain fused network, against timm eager and
# timm's best mode for the device (every mode of the tables above takes minutes of compiling).
DEFAULT_MODES = {"cuda": ["fused", "default"], "cpu": ["eager", "fused", "fused+compile"]}
DEFAULT_TIMM_MODES = {"cuda": ["eager", "compile+cl+graphs"], "cpu": ["eager", "compile+cl"]}


@dataclass
class Row:
    """One measured configuration."""

    impl: str  # "ours" or "timm"
    mode: str
    dtype: str
    device: str
    batch_size: int
    latency_ms: float | None = None  # batch 1
    throughput: float | None = None  # images / s at batch_size
    max_rel_err: float | None = None  # ||out - ref|| / ||ref|| against our fp32 eager logits
    setup_s: float | None = None  # building + compiling + warm-up
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ models
def build_model(model: str | nn.Module, seed: int = 0) -> nn.Module:
    """Our model (eval, fp32, CPU): for "l1"/"l3"/"l7" the WithTeacher class with random, realistic weights from
    `seed` (`efficientformer.factory.randomize_`); for a checkpoint path or hub id the class its heads hold
    (as `create_model` decides, so a single-head checkpoint is not given a random second head); a model
    instance as it is."""
    if isinstance(model, nn.Module):
        return model.eval()
    return create_model(model, seed=seed)


def _timm_name(model: nn.Module) -> str | None:
    """timm's variant name ("l1", "l3", "l7") of a preset-shaped model, else None."""
    from .presets import VARIANTS

    config = model.config
    return next((v.name for v in VARIANTS.values() if list(v.depths) == list(config.depths)
                 and list(v.hidden_sizes) == list(config.hidden_sizes)
                 and v.num_meta3d_blocks == config.num_meta3d_blocks), None)


def _is_v2(model: nn.Module) -> bool:
    from .deploy.fold_v2 import is_v2

    return is_v2(model)


def _timm_v2_error(model: nn.Module, image_size: int | None = None) -> str | None:
    """Why timm's `EfficientFormerV2` cannot be `model`'s twin (one sentence, without its full stop), or None."""
    from .checkpoints.conversion_v2 import timm_support_error_v2

    config = model.config
    if image_size is not None and image_size != config.image_size:
        return (f"timm's EfficientFormerV2 runs only at the size its attention biases were built for "
                f"({config.image_size}), not {image_size}; pass --image-size {config.image_size} or --compare none")
    reason = timm_support_error_v2(config, model.state_dict())
    return reason.rstrip(".") if reason else None


def timm_unavailable(model: nn.Module, image_size: int | None = None) -> str | None:
    """Why timm cannot run the same network as `model` here (at `image_size`, when given; one sentence), or
    None when it can."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return "timm is not installed"
    if _is_v2(model):
        return _timm_v2_error(model, image_size)
    if _timm_name(model) is None:
        return "timm has only the L1, L3 and L7 shapes"
    if not hasattr(model, DISTILLATION_HEAD):
        return "timm's EfficientFormer always has two heads (benchmark the WithTeacher class)"
    return None


def timm_twin(model: nn.Module) -> nn.Module:
    """timm's EfficientFormer (or EfficientFormerV2, for a V2 model) with exactly our model's weights (eval,
    fp32, CPU).

    V1 needs a standard shape (L1, L3 or L7 widths and depths) and the WithTeacher heads; timm's LayerNorm
    eps is set to ours (transformers uses 1e-12, timm 1e-5).
    """
    try:
        import timm
    except ImportError as err:
        raise MissingDependencyError(f"comparing with timm needs 'timm', which is not installed: pip install timm, "
                                     f"or pass --compare none ({err})") from None
    from .checkpoints.keys import Layout, convert_state_dict

    config = model.config
    if _is_v2(model):
        return _timm_twin_v2(timm, model)
    name = _timm_name(model)
    if name is None:
        raise ConfigError("timm has only the L1, L3 and L7 shapes; compare a preset-shaped model or pass --compare none.")
    if not hasattr(model, DISTILLATION_HEAD):
        raise ConfigError("timm's EfficientFormer always has two heads; benchmark the WithTeacher class.")
    twin = timm.create_model(f"efficientformer_{name}", pretrained=False, num_classes=config.num_labels)
    state = {k: v for k, v in model.state_dict().items()}
    twin.load_state_dict(convert_state_dict(state, "transformers", "timm", Layout.from_config(config)), strict=True)
    for module in twin.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = config.layer_norm_eps
    return twin.eval()


def _timm_twin_v2(timm, model: nn.Module) -> nn.Module:
    """timm's `EfficientFormerV2` of `model`'s shape (`efficientformerv2_s0` with every shape argument given)
    holding its weights, renamed through the V2 key table (`checkpoints.keys_v2`)."""
    from .checkpoints.keys_v2 import convert_state_dict_v2

    reason = _timm_v2_error(model)
    if reason:
        raise ConfigError(reason + ".")
    config = model.config
    twin = timm.create_model("efficientformerv2_s0", pretrained=False, depths=tuple(config.depths),
                             embed_dims=tuple(config.hidden_sizes), num_vit=config.num_attention_blocks,
                             mlp_ratios=tuple(tuple(r) for r in config.mlp_ratios), num_classes=config.num_labels,
                             distillation=hasattr(model, DISTILLATION_HEAD), img_size=config.image_size,
                             in_chans=config.num_channels, norm_eps=config.batch_norm_eps,
                             layer_scale_init_value=config.layer_scale_init_value if config.use_layer_scale else None)
    state = convert_state_dict_v2(dict(model.state_dict()), "transformers", "timm")
    twin.load_state_dict(state, strict=True)
    return twin.eval()


# ------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, *, min_time: float = 0.5, repeats: int = 7,
              warmup: int = 3, stat: str = "median") -> float:
    """Median (or `stat="min"`) seconds of one `fn()` call: `repeats` timed groups of n calls each (n chosen
    so a group lasts about min_time / repeats), after `warmup` calls. CUDA is timed with events. The
    minimum suits a shared CPU, where other processes only ever add time."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - start, 1e-6)
    n = max(1, int(min_time / repeats / once))
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) / 1e3 / n)
        else:
            begin_t = time.perf_counter()
            for _ in range(n):
                fn()
            samples.append((time.perf_counter() - begin_t) / n)
    return min(samples) if stat == "min" else statistics.median(samples)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().float().cpu(), ref.detach().float().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-12))


def tune_cpu_allocator(threshold: int = 1 << 30) -> bool:
    """Keep freed activation buffers in the process instead of returning them to the OS (glibc `mallopt`
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD), so a CPU forward pass does not page-fault on fresh memory
    every call; same effect as `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` in the environment.
    Process-wide (it helps every model in the process equally). Returns False where glibc is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, threshold)) and bool(libc.mallopt(m_trim_threshold, threshold))
    except (OSError, AttributeError):
        return False


# ------------------------------------------------------------------------------------------ runners
def _our_runner(model: nn.Module, mode: str, device: torch.device, dtype: torch.dtype, image_size: int):
    from .deploy.optimize import optimize

    if mode == "eager":
        net = _copy_to(model, device, dtype)
        return lambda x: net(x).logits
    if mode == "onnxruntime":
        return _onnxruntime_runner(model, image_size)
    return optimize(model, image_size=(image_size, image_size), dtype=dtype, device=device, **OUR_MODES[mode])


def _copy_to(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def _timm_runner(twin: nn.Module, mode: str, device: torch.device, dtype: torch.dtype, image_size: int = 224):
    from .deploy.optimize import capture_cuda_graph

    channels_last, compile_mode, graphs = TIMM_MODES[mode]
    net = _copy_to(twin, device, dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    # One eager call first: timm's attention fills its bias cache (a dict keyed by device) on its first eval
    # call, and a compiled or captured first call would write that dict inside the graph (the CUDA-graph
    # modes then fail).
    net(torch.randn(1, 3, image_size, image_size, device=device, dtype=dtype))
    fn: Callable = net
    if compile_mode:
        fn = torch.compile(net, mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if not graphs:
        return lambda x: fn(x.to(device=device, dtype=dtype, memory_format=fmt))
    cache: dict[tuple, Any] = {}

    def replay(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device, dtype=dtype, memory_format=fmt)
        if tuple(x.shape) not in cache:
            cache[tuple(x.shape)] = capture_cuda_graph(fn, x.clone(memory_format=fmt))
        graph, static_in, static_out = cache[tuple(x.shape)]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    return replay


def _onnxruntime_runner(model: nn.Module, image_size: int):
    import os
    import tempfile

    ort = require("onnxruntime", "export", "the onnxruntime benchmark row")
    from .deploy.export import export_onnx

    folder = tempfile.mkdtemp(prefix="efficientformer-bench-")
    path = export_onnx(model, os.path.join(folder, "model.onnx"), image_size=(image_size, image_size),
                       dynamic_batch=True, check=False)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as the torch rows
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.float().cpu().numpy()})[0])


# ------------------------------------------------------------------------------------------ driver
def quiet_compiler() -> None:
    """Silence what torch.compile prints on its own: Inductor writes every autotuning table ("AUTOTUNE ...")
    straight to stderr, and its loggers warn about choices it makes; a benchmark's table would be buried
    under them. Errors still show."""
    import logging

    try:
        from torch._inductor import select_algorithm

        select_algorithm.PRINT_AUTOTUNE = False
    except Exception:  # an Inductor without that switch prints nothing to silence, or cannot compile at all
        pass
    for name in ("torch._inductor", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)


def environment() -> dict[str, str]:
    """Versions and machine, for the table's header."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpu_threads": str(torch.get_num_threads())}
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def run_benchmark(model: str | nn.Module = "l1", *, device: str = "cpu", batch_size: int = 32, dtype: str = "fp32",
                  image_size: int = 224, compare: str | None = "auto", modes: list[str] | None = None,
                  timm_modes: list[str] | None = None, latency: bool = True, throughput: bool = True,
                  min_time: float = 0.5, check_batch: int = 4, seed: int = 0, budget_s: float | None = None,
                  profile: tuple[str, ...] = (), stat: str = "median", log: Callable[[str], None] | None = print) -> list[Row]:
    """Measure our modes (and timm's) and check their outputs.

    Args:
        model: "l1", "l3", "l7" (random weights), a checkpoint path / hub id, or a model instance.
        device: "cpu" or "cuda".
        batch_size: the large batch for throughput.
        dtype: "fp32", "bf16" or "fp16" (all modes run in it; the reference is our fp32 eager model).
        image_size: square input side.
        compare: "timm" to add timm's modes, None (or "none") for ours only, "auto" (default): timm's
            when timm is installed and has the model's shape, else ours only with a note to `log`.
        modes / timm_modes: which modes (default: DEFAULT_MODES / DEFAULT_TIMM_MODES for the device; all are
            in OUR_MODES / TIMM_MODES).
        latency / throughput: which measurements.
        min_time: seconds spent timing each measurement.
        check_batch: images in the output check.
        profile: implementations ("ours", "timm") whose modes also get a kernel-time profile at the large batch
            (in `Row.extra["profile"]`).
        stat: "median" (default) or "min" of the timed repeats ("min" on a shared CPU).
        budget_s: stop starting new modes after this many seconds (the rows so far are returned).
        log: where progress lines go (None: silent).

    Returns:
        One `Row` per (implementation, mode).

    Raises:
        InputError: CUDA requested but not available, or unknown mode.
    """
    from .deploy.optimize import parse_dtype

    started = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but torch sees no CUDA GPU; use --device cpu.")
    torch_dtype = parse_dtype(dtype)
    dtype_name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[torch_dtype]
    if compare not in (None, "none", "timm", "auto"):
        raise InputError(f"--compare {compare!r} is not supported; use auto, timm or none.")
    ours = build_model(model, seed)
    if compare == "auto":
        reason = timm_unavailable(ours, image_size)
        if reason and log:
            log(f"[bench] {reason}: measuring ours only")
        compare = None if reason else "timm"
    compare = None if compare == "none" else compare
    kind = "cuda" if dev.type == "cuda" else "cpu"
    modes = list(modes) if modes is not None else DEFAULT_MODES[kind]
    timm_modes = (list(timm_modes) if timm_modes is not None else DEFAULT_TIMM_MODES[kind]) if compare else []
    unknown = [m for m in modes if m not in OUR_MODES] + [m for m in timm_modes if m not in TIMM_MODES]
    if unknown:
        raise InputError(f"unknown mode(s) {unknown}; ours: {list(OUR_MODES)}, timm: {list(TIMM_MODES)}.")
    twin = timm_twin(ours) if compare == "timm" else None
    if any(OUR_MODES[m] and OUR_MODES[m].get("compile", dev.type == "cuda") for m in modes) or any(
            TIMM_MODES[m][1] for m in timm_modes):
        quiet_compiler()

    gen = torch.Generator().manual_seed(seed + 1)
    shape = (ours.config.num_channels, image_size, image_size)
    xb = torch.randn(batch_size if throughput else check_batch, *shape, generator=gen)
    x1 = torch.randn(1, *shape, generator=gen)
    # The reference: our float32 eager model on the same device, on the large batch (the output check
    # then needs no extra input shape, so compiled modes compile only for batch 1 and the large batch).
    with torch.no_grad():
        ref_model = _copy_to(ours, dev, torch.float32)
        reference = torch.cat([ref_model(chunk).logits.cpu() for chunk in xb.to(dev).split(64)])
        del ref_model
    plan = [("ours", m) for m in modes] + [("timm", m) for m in timm_modes]
    rows = []
    for impl, mode in plan:
        if budget_s is not None and time.perf_counter() - started > budget_s:
            if log:
                log(f"[bench] budget of {budget_s:.0f}s spent; skipping {impl} {mode} and the rest")
            break
        row = Row(impl, mode, dtype_name, str(dev), batch_size)
        t0 = time.perf_counter()
        run = None
        try:
            with torch.no_grad():
                run = (_our_runner(ours, mode, dev, torch_dtype, image_size) if impl == "ours"
                       else _timm_runner(twin, mode, dev, torch_dtype, image_size))
                big = xb.to(dev, torch_dtype)
                row.max_rel_err = _rel_err(run(big), reference)
                if latency:
                    one = x1.to(dev, torch_dtype)
                    row.latency_ms = 1e3 * time_call(lambda: run(one), dev, min_time=min_time, stat=stat)
                if throughput:
                    row.throughput = batch_size / time_call(lambda: run(big), dev, min_time=min_time, stat=stat)
                if profile and impl in profile:
                    row.extra["profile"] = profile_summary(lambda: run(big), dev)
        except Exception as err:  # one failing mode must not lose the others' numbers
            row.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        row.setup_s = time.perf_counter() - t0
        rows.append(row)
        if log:
            log(f"[bench] {format_row(row)}  (setup+timing {row.setup_s:.0f}s)")
        run = None
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_row(row: Row) -> str:
    lat = f"{row.latency_ms:.3f}" if row.latency_ms is not None else "-"
    thr = f"{row.throughput:,.0f}" if row.throughput is not None else "-"
    err = f"{row.max_rel_err:.1e}" if row.max_rel_err is not None else "-"
    return f"| {row.impl} | {row.mode} | {row.dtype} | {lat} | {thr} | {err} | {row.note} |"


def format_table(rows: list[Row], title: str | None = None) -> str:
    """A markdown table; speed-ups are against timm's best mode of the same table."""
    lines = []
    if title:
        lines.append(title)
    batch = rows[0].batch_size if rows else 0
    lines.append(f"| impl | mode | dtype | latency b=1 (ms) | throughput b={batch} (img/s) | rel. err vs fp32 | note |")
    lines.append("| --- | --- | --- | ---: | ---: | ---: | --- |")
    lines.extend(format_row(r) for r in rows)
    summary = speedup_summary(rows)
    if summary:
        lines.append("")
        lines.append(summary)
    return "\n".join(lines)


def speedup_summary(rows: list[Row]) -> str:
    """One line: our best against timm's best, for latency and throughput."""
    def best(impl: str, attr: str, better: Callable) -> Row | None:
        cands = [r for r in rows if r.impl == impl and getattr(r, attr) is not None]
        return better(cands, key=lambda r: getattr(r, attr)) if cands else None

    parts = []
    ours_t, timm_t = best("ours", "throughput", max), best("timm", "throughput", max)
    if ours_t and timm_t:
        parts.append(f"throughput: ours {ours_t.throughput:,.0f} img/s ({ours_t.mode}) vs timm "
                     f"{timm_t.throughput:,.0f} ({timm_t.mode}) = {ours_t.throughput / timm_t.throughput:.2f}x")
    ours_l, timm_l = best("ours", "latency_ms", min), best("timm", "latency_ms", min)
    if ours_l and timm_l:
        parts.append(f"latency: ours {ours_l.latency_ms:.3f} ms ({ours_l.mode}) vs timm {timm_l.latency_ms:.3f} ms "
                     f"({timm_l.mode}) = {timm_l.latency_ms / ours_l.latency_ms:.2f}x faster")
    timm_eager = next((r for r in rows if r.impl == "timm" and r.mode == "eager" and r.latency_ms), None)
    if ours_l and timm_eager:
        parts.append(f"ours best latency / timm eager = {ours_l.latency_ms / timm_eager.latency_ms:.2f}")
    return "; ".join(parts)


def profile_summary(fn: Callable[[], Any], device: torch.device, top: int = 15) -> str:
    """Where the time of `fn()` goes: the top operators/kernels by device (or CPU) self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    _sync(device)
    with profile(activities=activities) as prof:
        for _ in range(3):
            fn()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    try:
        return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)
    except Exception:  # older/newer torch name the device column differently
        return prof.key_averages().table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=60)


def rows_as_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


__all__ = [
    "OUR_MODES",
    "TIMM_MODES",
    "Row",
    "build_model",
    "environment",
    "format_table",
    "randomize_",
    "run_benchmark",
    "time_call",
    "quiet_compiler",
    "timm_twin",
    "timm_unavailable",
]
