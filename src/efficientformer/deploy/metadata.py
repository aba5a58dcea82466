"""What an exported file says about itself: model class, config, labels and preprocessing.

Every exporter stores the same string -> string mapping (`export_metadata`), so a deployed file needs
nothing beside it to turn images into named classes:

| key | value |
| --- | --- |
| `model_class` | `EfficientFormerForImageClassification`, `...WithTeacher` or `EfficientFormerModel` (V2: `EfficientFormerV2...`) |
| `output` | the output's name: `logits`, or `last_hidden_state` for a backbone |
| `image_size` | JSON `[height, width]`: the input size fixed in the file |
| `id2label` | JSON `{"0": "cat", ...}` (empty for a backbone) |
| `preprocessor` | JSON `EfficientFormerImageProcessor` settings that produce `image_size` |
| `efficientformer.config` | the model's `config.json` as JSON |
| `efficientformer_version` | the version of this package that wrote the file |

Where it is stored: ONNX `metadata_props`; TFLite a flatbuffer `metadata` entry named
`efficientformer` holding the mapping as JSON; Core ML `user_defined_metadata`; TorchScript the extra
file `efficientformer.json` of the archive. `read_metadata(path)` reads it back from any of them, with
the format's own package (onnxruntime, tensorflow, coremltools or torch).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import CheckpointError, require

TFLITE_METADATA_NAME = "efficientformer"
TORCHSCRIPT_METADATA_FILE = "efficientformer.json"
KEYS = ("model_class", "output", "image_size", "id2label", "preprocessor", "efficientformer.config",
        "efficientformer_version")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def output_name(model_class: str) -> str:
    """The name of the exported output: `last_hidden_state` for a backbone, else `logits`."""
    return "last_hidden_state" if is_backbone(model_class) else "logits"


def is_backbone(model_class: str) -> bool:
    """Whether a class name (`model_class` of the metadata, "TF" prefix allowed) is a backbone of either family."""
    from ..factory import CLASS_NAMES, CLASS_NAMES_V2

    return model_class.removeprefix("TF") in (CLASS_NAMES["backbone"], CLASS_NAMES_V2["backbone"])


def processor_for_size(settings: dict | None, size: tuple[int, int]) -> dict:
    """Processor settings (`preprocessor_config.json` keys) that produce (height, width) images.

    An exported file takes one image size only (its attention bias is fixed for that token grid), so
    settings made for another size are scaled: the center crop becomes `size` and the resize before
    it grows or shrinks by the same factor (shortest edge 256 with crop 224 becomes 293 with crop 256),
    keeping the crop's share of the image. None means the released checkpoints' settings.
    """
    from ..presets import RELEASED_PREPROCESSING
    from ..preprocessing.processor import EfficientFormerImageProcessor

    data = json.loads(EfficientFormerImageProcessor(**(settings or RELEASED_PREPROCESSING)).to_json_string())
    height, width = size
    resize = data["size"] if data["do_resize"] else None
    if data["do_center_crop"]:
        crop = data["crop_size"]
        if (crop["height"], crop["width"]) == (height, width):
            return data
        scale = max(height / crop["height"], width / crop["width"])
    elif resize is not None and "height" in resize:
        if (resize["height"], resize["width"]) == (height, width):
            return data
        data["size"] = {"height": height, "width": width}
        return data
    else:  # no fixed output size (shortest-edge resize or none): crop the export's size out of it
        scale = 1.0
    data["do_center_crop"] = True
    data["crop_size"] = {"height": height, "width": width}
    if resize is not None and "shortest_edge" in resize:
        # never below the crop, which would otherwise be zero-padded
        data["size"] = {"shortest_edge": max(round(resize["shortest_edge"] * scale), height, width)}
    elif resize is not None:
        data["size"] = {"height": max(round(resize["height"] * scale), height),
                        "width": max(round(resize["width"] * scale), width)}
    return data


def export_metadata(model, size: tuple[int, int]) -> dict[str, str]:
    """The metadata of an export of `model` (a PyTorch or Keras EfficientFormer of this package) at the
    fixed input `size` (height, width); the preprocessing is the model's `processor_settings` (set by
    `from_pretrained`) or the released checkpoints', scaled to `size` (see `processor_for_size`)."""
    from .._version import __version__

    model_class = type(model).__name__.removeprefix("TF")
    config = model.config
    labels = {} if is_backbone(model_class) else {str(i): n for i, n in config.id2label.items()}
    return {
        "model_class": model_class,
        "output": output_name(model_class),
        "image_size": _dumps([int(size[0]), int(size[1])]),
        "id2label": _dumps(labels),
        "preprocessor": _dumps(processor_for_size(getattr(model, "processor_settings", None), size)),
        "efficientformer.config": _dumps(config.to_dict()),
        "efficientformer_version": __version__,
    }


# ------------------------------------------------------------------------------------------- tflite
def tflite_with_metadata(flatbuffer: bytes, metadata: dict[str, str]) -> bytes:
    """The TFLite flatbuffer with `metadata` (as JSON) added under the name `efficientformer` (replacing
    an earlier entry of that name). Uses TensorFlow's generated schema classes."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    if any(getattr(b, "offset", 0) for b in model.buffers or ()):
        # weights stored after the flatbuffer (files over 2 GB): re-packing would drop them
        raise CheckpointError("this TFLite file keeps its weights outside the flatbuffer, so metadata cannot be "
                              "added; export a smaller model or use ONNX.")
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != TFLITE_METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(_dumps(metadata).encode("utf-8"), dtype=np.uint8)  # packed as one vector
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_tflite(path: str) -> dict[str, str] | None:
    require("tensorflow", "tf", "reading TFLite metadata")
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as handle:
        data = handle.read()
    model = schema.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == TFLITE_METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode("utf-8"))
    return None


# --------------------------------------------------------------------------------------------- read
def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata an exported `.onnx`, `.tflite`, `.mlpackage` or TorchScript `.pt` carries: the
    `export_metadata` mapping (entries other tools add, such as coremltools' own, left out), values as
    stored, strings (`decode` parses the JSON ones).

    Raises:
        CheckpointError: the file does not exist, is of another kind, or was not written by this package's
            exporters (see `check_metadata`).
        MissingDependencyError: the format's package (onnxruntime, tensorflow, coremltools) is absent.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist; give the path of an exported .onnx, .tflite, .mlpackage or "
                              ".pt file.")
    kind = os.path.splitext(path.rstrip("/"))[1].lower()
    if kind == ".onnx":
        ort = require("onnxruntime", "export", "reading ONNX metadata")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        found = dict(session.get_modelmeta().custom_metadata_map)
    elif kind == ".tflite":
        found = _read_tflite(path) or {}
    elif kind in (".pt", ".pth", ".torchscript"):
        torch = require("torch", "torch", "reading TorchScript metadata")
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
            torch.jit.load(path, map_location="cpu", _extra_files=extra)
        found = json.loads(extra[TORCHSCRIPT_METADATA_FILE] or "{}")
    elif kind == ".mlpackage":
        ct = require("coremltools", "export", "reading Core ML metadata")
        spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
        found = dict(spec.description.metadata.userDefined)
    else:
        raise CheckpointError(f"{path} is not an exported model; metadata is read from .onnx, .tflite, "
                              ".mlpackage and TorchScript .pt files.")
    found = check_metadata(found, path)
    return {key: value for key, value in found.items() if key in KEYS}  # not the keys other tools add


def check_metadata(found: dict[str, str], path: str) -> dict[str, str]:
    """`found` when it holds this package's metadata (a file written by our exporters), else an error.

    Raises:
        CheckpointError: the entries `model_class`, `image_size`, `preprocessor` or `efficientformer.config`
            are missing.
    """
    missing = [key for key in ("model_class", "image_size", "preprocessor", "efficientformer.config")
               if key not in found]
    if missing:
        raise CheckpointError(f"{path} carries no efficientformer metadata (labels and preprocessing), so its "
                              "outputs cannot be named; export it with `efficientformer export` from the checkpoint.")
    return found


def decode(metadata: dict[str, str]) -> dict[str, Any]:
    """The metadata with its JSON values decoded: `image_size` a (height, width) tuple, `id2label` with
    int keys, `preprocessor` and `config` dicts."""
    return {
        "model_class": metadata["model_class"],
        "output": metadata.get("output", output_name(metadata["model_class"])),
        "image_size": tuple(json.loads(metadata["image_size"])),
        "id2label": {int(k): v for k, v in json.loads(metadata.get("id2label", "{}")).items()},
        "preprocessor": json.loads(metadata["preprocessor"]),
        "config": json.loads(metadata["efficientformer.config"]),
        "efficientformer_version": metadata.get("efficientformer_version"),
    }


__all__ = ["KEYS", "TFLITE_METADATA_NAME", "TORCHSCRIPT_METADATA_FILE", "check_metadata", "decode", "export_metadata",
           "is_backbone", "output_name", "processor_for_size", "read_metadata", "tflite_with_metadata"]
