"""Export an EfficientFormer to deployment formats: ONNX, TorchScript, TFLite and Core ML.

`export(model, path, format=...)` is the one entry point; each format also has its own function.
Every exporter writes the folded inference network (`efficientformer.deploy.optimize.fuse`: BatchNorms, layer
scales and LayerNorm affines folded, attention bias precomputed for the image size), and checks what it
wrote against the PyTorch model where the format can be run here:

| format | how | checked |
| --- | --- | --- |
| onnx | `torch.onnx.export` (opset 18, dynamic batch by default) | `onnx.checker` + onnxruntime within 1e-4 |
| torchscript | `torch.jit.trace` of the fused network | reloaded and run, within 1e-4 |
| tflite | our Keras classes -> `tf.lite.TFLiteConverter` (fp32, fp16 or int8 weights) | LiteRT interpreter |
| coreml | `coremltools.convert` of the traced network -> `.mlpackage` (ML program) | spec validated (runs only on macOS) |

A checkpoint path is built as the class its weights hold (`efficientformer.factory.model_class_for`):
both heads (`EfficientFormerForImageClassificationWithTeacher`), one head
(`EfficientFormerForImageClassification`) or none (`EfficientFormerModel`), so the file computes what
`from_pretrained` of that class computes, and the check compares against that model.

EfficientFormerV2 models (`s0`, `s1`, `s2`, `l`, or their checkpoints) export the same way, through their own
folding (`efficientformer.deploy.fold_v2`); a V2 backbone's `last_hidden_state` is the normalized map
(B, C, H/32, W/32).

The model input is float (B, 3, H, W) `pixel_values` normalized as the image processor does; the output
is `logits` (B, num_labels) for the classifiers (the mean of both heads for the WithTeacher class, as its
`logits`) and `last_hidden_state` (B, N, C), the normalized tokens, for a backbone. Each file carries
its model class, config, labels and preprocessing (`efficientformer.deploy.metadata`: ONNX
`metadata_props`, TFLite metadata, Core ML user-defined metadata, TorchScript extra files), and is
written atomically: a temporary file beside the target, checked, then renamed over it.

Example:
    >>> from efficientformer import EfficientFormerForImageClassificationWithTeacher, export
    >>> model = EfficientFormerForImageClassificationWithTeacher.from_pretrained("path/to/folder")  # doctest: +SKIP
    >>> export(model, "l1.onnx", format="onnx")                                                     # doctest: +SKIP
    'l1.onnx'
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..constants import MIN_IMAGE_SIZE
from ..errors import ConfigError, InputError, require
from .metadata import (
    TORCHSCRIPT_METADATA_FILE,
    export_metadata,
    output_name,
    read_metadata,
    tflite_with_metadata,
)

FORMATS = ("onnx", "torchscript", "tflite", "coreml")
DEFAULT_OPSET = 18
# the random-weight models built from a preset name are the same on every call
PRESET_SEED = 0


def _size(image_size: Any, config) -> tuple[int, int]:
    if image_size is None:
        height = width = int(config.image_size)
    elif isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = (int(v) for v in image_size)
    if min(height, width) < MIN_IMAGE_SIZE:
        raise InputError(f"image_size {height}x{width} is too small; the model needs at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}.")
    return height, width


def load_model(model: Any):
    """The PyTorch model to export, in eval mode:

    - a model instance: as given;
    - a folder, weights file or hub id (any checkpoint layout `load_checkpoint` reads): the class its
      heads make it (`efficientformer.factory.model_class_for`: WithTeacher, single-head classifier or
      backbone) with its weights in float32 and its preprocessing, as `from_pretrained` of that class builds it;
    - a preset name, "l1", "l3" or "l7" (V2: "s0", "s1", "s2", "l") (when no such path exists): the WithTeacher class with random,
      realistic weights (`efficientformer.factory.randomize_`, seeded: the same on every call), for trying a
      format out. The constructor alone leaves layer scales at 1e-5 and every normalization at identity,
      under which a folding error would not show in the export's check.
    """
    if not isinstance(model, (str, os.PathLike)):
        return model.eval()
    from ..factory import create_model

    return create_model(model, seed=PRESET_SEED)


def _fused_cpu(model, size: tuple[int, int]):
    from .optimize import fuse

    fused = fuse(model, size)
    return fused.eval()


def _check_close(got: np.ndarray, want: np.ndarray, atol: float, what: str) -> float:
    if got.shape != want.shape:
        raise RuntimeError(f"{what} has shape {got.shape}, PyTorch {want.shape}; please report this with the "
                           "model's config.")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if not np.isfinite(diff) or diff > atol:
        raise RuntimeError(f"{what} differs from PyTorch by {diff:.2e} (more than {atol:.0e}); "
                           "please report this with the model's config.")
    return diff


def _sample(config, size: tuple[int, int], batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, config.num_channels, *size)).astype(np.float32)


def _reference(model, x: np.ndarray) -> np.ndarray:
    """What the file must compute: the model's `logits`, or `last_hidden_state` for a backbone."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = out.logits if hasattr(out, "logits") else out.last_hidden_state if hasattr(out, "last_hidden_state") else out
    return out.float().numpy()


def _output(model) -> str:
    return output_name(type(model).__name__.removeprefix("TF"))


def check_output_path(path: str | os.PathLike, format: str) -> str:
    """The output path as a string, refused (before any work) when it cannot be written as `format`: a
    folder where a file goes, a Core ML package not ending in `.mlpackage`, a parent that is a file.

    Raises:
        InputError: with one sentence naming the path and what to give instead.
    """
    path = os.fspath(path)
    if format == "coreml":
        if not path.rstrip("/").endswith(".mlpackage"):
            raise InputError(f"a Core ML model is a folder ending in .mlpackage; got {path!r}.")
        if os.path.exists(path) and not os.path.isdir(path):
            raise InputError(f"{path} is a file; a Core ML model is a folder ending in .mlpackage, remove the file "
                             "or choose another name.")
        path = path.rstrip("/")
    elif os.path.isdir(path):
        suffix = {"onnx": ".onnx", "torchscript": ".pt", "tflite": ".tflite"}.get(format, "")
        raise InputError(f"{path} is a folder; give the file to write, e.g. "
                         f"{os.path.join(path, 'model' + suffix)}.")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:  # the first ancestor that exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{parent} is a file, so {path} cannot be created in it; choose another output path.")
    return path


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Silence what torch.onnx says on every export but that is not about this model: one
    "torchvision is not installed" warning per torchvision op when torchvision is absent (we export none),
    and a deprecation warning about its own pytree classes. Only for the duration of our call."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------------------------- onnx
def export_onnx(model: Any, path: str | os.PathLike, *, image_size: Any = None, dynamic_batch: bool = True,
                opset: int = DEFAULT_OPSET, check: bool = True, atol: float = 1e-4) -> str:
    """Write an ONNX model of the folded network, with its metadata, and (with `check`) validate it.

    Args:
        model: an EfficientFormer PyTorch model (or a name/path, see `load_model`).
        path: the `.onnx` file to write.
        image_size: (H, W) or one side (default: the config's); fixed in the graph, since the attention
            bias is precomputed for its token grid.
        dynamic_batch: leave the batch dimension free (default True).
        opset: ONNX opset, at least 17 (default 18).
        check: run `onnx.checker.check_model` and compare onnxruntime's output with PyTorch's (max abs
            difference at most `atol`) on a random batch of 2 (and 3 when the batch is dynamic), before
            the file takes the place of `path`.

    The graph's input is `pixel_values`, its output `logits` (`last_hidden_state` for a backbone); the
    model's class, config, labels and preprocessing are in `metadata_props` (see
    `efficientformer.deploy.metadata`), which `ImageClassifier.from_pretrained("model.onnx")` reads.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: torch/onnx/onnxscript (or onnxruntime with `check`) not installed.
        ConfigError: opset below 17. InputError: `path` is a folder, or the image size is below 32.
        RuntimeError: the check failed (nothing is written then).
    """
    torch = require("torch", "torch", "ONNX export")
    require("onnxscript", "export", "ONNX export")
    onnx = require("onnx", "export", "ONNX export")
    if opset < 17:
        raise ConfigError(f"opset {opset} is too old; use 17 or later (LayerNormalization needs 17).")
    path = check_output_path(path, "onnx")
    model = load_model(model)
    size = _size(image_size, model.config)
    fused = _fused_cpu(model, size)
    example = torch.from_numpy(_sample(model.config, size))
    kwargs: dict[str, Any] = {"input_names": ["pixel_values"], "output_names": [_output(model)],
                              "opset_version": opset}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with torch.no_grad(), _quiet_onnx_exporter():
        program = torch.onnx.export(fused, (example,), dynamo=True, external_data=False, verbose=False, **kwargs)
    program.model.metadata_props.update(export_metadata(model, size))

    def write(tmp: str) -> None:
        program.save(tmp)
        if check:
            onnx.checker.check_model(tmp, full_check=True)
            ort = require("onnxruntime", "export", "checking an ONNX export")
            session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            for batch in ((2, 3) if dynamic_batch else (2,)):
                x = _sample(model.config, size, batch, seed=batch)
                _check_close(session.run(None, {"pixel_values": x})[0], _reference(model, x), atol,
                             "onnxruntime output")

    from ..fileio import write_with

    write_with(path, write)
    return path


# --------------------------------------------------------------------------------------- torchscript
def export_torchscript(model: Any, path: str | os.PathLike, *, image_size: Any = None, dtype: Any = None,
                       check: bool = True, atol: float = 1e-4) -> str:
    """Write a TorchScript (`torch.jit.trace`) file of the folded network (`torch.jit.load` runs it
    without this package). The metadata (see `efficientformer.deploy.metadata`) is the extra file
    `efficientformer.json` of the archive: `torch.jit.load(path, _extra_files={"efficientformer.json": ""})`.

    Args:
        model, image_size: as `export_onnx`; any batch size runs.
        dtype: "fp32" (default), "bf16" or "fp16" weights and inputs.
        check: reload the file and compare its output with PyTorch's (fp32 only: within `atol`).

    Returns:
        The path written.
    """
    torch = require("torch", "torch", "TorchScript export")
    import json

    from .optimize import parse_dtype

    torch_dtype = parse_dtype(dtype or "fp32")
    path = check_output_path(path, "torchscript")
    model = load_model(model)
    size = _size(image_size, model.config)
    fused = _fused_cpu(model, size).to(torch_dtype)
    example = torch.from_numpy(_sample(model.config, size)).to(torch_dtype)
    traced = _trace(fused, example)
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(export_metadata(model, size), sort_keys=True)}

    def write(tmp: str) -> None:
        traced.save(tmp, _extra_files=extra)
        if check and torch_dtype == torch.float32:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
                loaded = torch.jit.load(tmp)
            for batch in (1, 3):
                x = _sample(model.config, size, batch, seed=batch)
                with torch.no_grad():
                    got = loaded(torch.from_numpy(x)).numpy()
                _check_close(got, _reference(model, x), atol, "the TorchScript output")

    from ..fileio import write_with

    write_with(path, write)
    return path


def _trace(fused, example):
    """torch.jit.trace without the warnings about the Python constants the fused network is built on."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(fused, (example,), check_trace=False)


# --------------------------------------------------------------------------------------------- tflite
def keras_model_from_torch(model):
    """Our Keras class of the same kind with the PyTorch model's weights (float32)."""
    from ..checkpoints import h5 as tf_weights
    from ..factory import model_class_for

    cls = model_class_for(model.state_dict(), backend="keras")  # the heads the PyTorch model has
    state = {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
             for k, v in model.state_dict().items()}
    keras_model = cls(model.config.copy())
    keras_model.load_weights_dict(tf_weights.pt_to_keras(state))
    return keras_model


def export_tflite(model: Any, path: str | os.PathLike, *, image_size: Any = None, quantize: str | None = None,
                  check: bool = True, atol: float = 1e-4, representative: np.ndarray | None = None) -> str:
    """Write a TFLite flatbuffer through our Keras classes and the TFLite converter.

    Args:
        model: a PyTorch EfficientFormer (converted to the Keras classes with its weights), a Keras
            EfficientFormer of this package, or a name/path (see `load_model`).
        path: the `.tflite` file to write.
        image_size: (H, W) or one side (default: the config's); the batch dimension stays dynamic.
        quantize: None (float32), "fp16" (float16 weights) or "int8" (int8 weights with dynamic-range
            activations; with `representative` images (N, C, H, W) float32, full-integer kernels where
            possible with float input/output).
        check: run the file with the LiteRT interpreter (`ai-edge-litert`, else TensorFlow's) on a random
            batch and compare with the source model: within `atol` for float32; for quantized files the
            relative error is only reported (see `compare_tflite`).

    Returns:
        The path written.
    """
    tf = require("tensorflow", "tf", "TFLite export")
    if quantize not in (None, "fp16", "int8"):
        raise ConfigError(f"quantize={quantize!r} is not supported; use None, 'fp16' or 'int8'.")
    path = check_output_path(path, "tflite")
    torch_model = None
    if not hasattr(model, "named_weights"):  # a PyTorch model (or a name): convert to Keras
        torch_model = load_model(model)
        keras_model = keras_model_from_torch(torch_model)
    else:
        keras_model = model
    config = keras_model.config
    size = _size(image_size, config)
    metadata = export_metadata(torch_model if torch_model is not None else keras_model, size)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="efficientformer-savedmodel-") as saved:
        keras_model.export(saved, image_size=size)  # SavedModel with a `serve` endpoint, dynamic batch
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serve"])
        if quantize == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if representative is not None:
                samples = np.asarray(representative, np.float32)
                converter.representative_dataset = lambda: ([samples[i:i + 1]] for i in range(len(samples)))
        flat = tflite_with_metadata(converter.convert(), metadata)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(flat)
        if check:
            x = _sample(config, size, 2)
            # the reference is the PyTorch model when there is one (the Keras twin agrees within ~1e-6)
            want = _reference(torch_model, x) if torch_model is not None else _keras_logits(keras_model, x)
            got = run_tflite(tmp, x)
            if quantize is None:
                _check_close(got, want, atol, "the TFLite output")

    from ..fileio import write_with

    write_with(path, write)
    return path


def _keras_logits(keras_model, x: np.ndarray) -> np.ndarray:
    out = keras_model(x, training=False)
    out = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return np.asarray(out)


def run_tflite(path: str | os.PathLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run a `.tflite` file on float32 images (B, C, H, W) with the LiteRT interpreter (`ai-edge-litert`;
    TensorFlow's `tf.lite.Interpreter` when LiteRT is absent) and return its first output."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = require("tensorflow", "tf", "running a TFLite file").lite.Interpreter
    interpreter = Interpreter(model_path=os.fspath(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]
    if tuple(inp["shape"]) != tuple(x.shape):
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def compare_tflite(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How a (quantized) model's logits differ from the float32 ones: relative L2 error, max abs error,
    top-1 agreement and mean top-5 overlap over the batch."""
    ref, out = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    top5_ref, top5_out = np.argsort(-ref, 1)[:, :5], np.argsort(-out, 1)[:, :5]
    return {
        "rel_l2": float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)),
        "max_abs": float(np.max(np.abs(out - ref))),
        "top1_agreement": float(np.mean(ref.argmax(1) == out.argmax(1))),
        "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_ref, top5_out)])),
    }


# ---------------------------------------------------------------------------------------------- coreml
def export_coreml(model: Any, path: str | os.PathLike, *, image_size: Any = None, dtype: Any = None,
                  minimum_deployment_target: str = "iOS16") -> str:
    """Write a Core ML `.mlpackage` (ML program) with coremltools from the traced folded network.

    The batch is fixed to 1 (Core ML's usual flexible-shape ranges can be added with coremltools).
    Core ML runs only on Apple platforms; here the spec is validated (`MLModel(..., skip_model_load=True)`
    and the program's input/output names and shapes) but not executed.

    Args:
        model, image_size: as `export_onnx`.
        path: folder ending in `.mlpackage`.
        dtype: compute precision, "fp16" (Core ML's default) or "fp32".
        minimum_deployment_target: e.g. "iOS16", "macOS13".

    Returns:
        The path written.
    """
    torch = require("torch", "torch", "Core ML export")
    ct = require("coremltools", "export", "Core ML export")
    path = check_output_path(path, "coreml")
    model = load_model(model)
    size = _size(image_size, model.config)
    fused = _fused_cpu(model, size)
    example = torch.from_numpy(_sample(model.config, size, 1))
    traced = _trace(fused, example)
    output = _output(model)
    precision = ct.precision.FLOAT32 if str(dtype).lower() in ("fp32", "float32", "torch.float32") else ct.precision.FLOAT16
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="pixel_values", shape=tuple(example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name=output)],
        convert_to="mlprogram",
        compute_precision=precision,
        minimum_deployment_target=getattr(ct.target, minimum_deployment_target),
    )
    mlmodel.short_description = f"EfficientFormer ({type(model).__name__}) {output} for {size[0]}x{size[1]} images"
    mlmodel.user_defined_metadata.update(export_metadata(model, size))
    from ..fileio import write_folder

    # a package is a folder: built complete beside `path` and swapped in, the old one kept until then
    with write_folder(path) as tmp:
        built = os.path.join(tmp, os.path.basename(path))  # coremltools wants the .mlpackage name
        mlmodel.save(built)
        validate_coreml(built, size, model.config, output=output)
        for entry in os.listdir(built):
            os.rename(os.path.join(built, entry), os.path.join(tmp, entry))
        os.rmdir(built)
    return path


def validate_coreml(path: str | os.PathLike, size: tuple[int, int], config, output: str = "logits") -> dict[str, Any]:
    """Load an `.mlpackage` without compiling it and check its spec: an ML program whose input is
    `pixel_values` (1, C, H, W) float32 and whose output is `output` (`logits`, or `last_hidden_state`
    for a backbone). Returns a short description."""
    ct = require("coremltools", "export", "Core ML validation")
    loaded = ct.models.MLModel(os.fspath(path), skip_model_load=True)
    spec = loaded.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise RuntimeError(f"{path} is not an ML program (got {spec.WhichOneof('Type')}).")
    inputs = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    want = [1, config.num_channels, size[0], size[1]]
    if inputs.get("pixel_values") != want or outputs != [output]:
        raise RuntimeError(f"{path} has inputs {inputs} and outputs {outputs}; expected pixel_values {want} -> "
                           f"{output}.")
    return {"inputs": inputs, "outputs": outputs, "spec_version": spec.specificationVersion}


# ---------------------------------------------------------------------------------------------- entry
def export(model: Any, path: str | os.PathLike, format: str = "onnx", *, image_size: Any = None,
           dynamic_batch: bool = True, dtype: Any = None, quantize: str | None = None, check: bool = True,
           opset: int = DEFAULT_OPSET) -> str:
    """Export `model` to `path` in `format` ("onnx", "torchscript", "tflite" or "coreml").

    Args:
        model: an EfficientFormer PyTorch model, or a preset name / folder / file / hub id.
        path: output file (folder ending in `.mlpackage` for Core ML).
        format: one of `FORMATS`.
        image_size: (H, W) or one side; default the config's `image_size`.
        dynamic_batch: ONNX only: free batch dimension (TFLite and TorchScript always accept any batch,
            Core ML takes batch 1).
        dtype: TorchScript weights ("fp32", "bf16", "fp16") or Core ML compute precision ("fp16"/"fp32").
        quantize: TFLite only: None, "fp16" or "int8".
        check: validate the written file (see each exporter) before it takes the place of `path`.
        opset: ONNX opset (>= 17).

    A checkpoint path is built as the class its heads make it (see `load_model`); every file carries
    that class, its config, labels and preprocessing (`read_metadata(path)` reads them back).

    Returns:
        The path written.

    Raises:
        ConfigError: unknown format or option; InputError: `path` is a folder (or not a `.mlpackage` for
            Core ML); MissingDependencyError: the format's package is absent.
    """
    if format == "onnx":
        return export_onnx(model, path, image_size=image_size, dynamic_batch=dynamic_batch, opset=opset, check=check)
    if format == "torchscript":
        return export_torchscript(model, path, image_size=image_size, dtype=dtype, check=check)
    if format == "tflite":
        return export_tflite(model, path, image_size=image_size, quantize=quantize, check=check)
    if format == "coreml":
        return export_coreml(model, path, image_size=image_size, dtype=dtype)
    raise ConfigError(f"format {format!r} is not supported; choose one of {', '.join(FORMATS)}.")


__all__ = [
    "FORMATS",
    "compare_tflite",
    "export",
    "export_coreml",
    "export_onnx",
    "export_tflite",
    "export_torchscript",
    "keras_model_from_torch",
    "load_model",
    "read_metadata",
    "run_tflite",
    "validate_coreml",
]
