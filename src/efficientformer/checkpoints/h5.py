"""Keras weights of EfficientFormer as numpy arrays: `tf_model.h5` files and PyTorch state dicts.

Weights are named as transformers 4.x's TensorFlow classes named them, without the model's own name
and the `:0` suffix, e.g. `efficientformer/encoder/last_stage/meta3D_layers/blocks.0/token_mixer/qkv/kernel`.
These names are the same for the three model classes (the backbone always sits under
`efficientformer/`, the heads are `classifier/` and `distillation_classifier/`).

`tf_model.h5` layout (as `TFPreTrainedModel.save_pretrained` wrote it with tf-keras): the root lists
the top-level layers in its `layer_names` attribute; each layer is a group whose `weight_names`
attribute lists its datasets, stored at `<layer>/<model name>/<weight name>:0`.

Only numpy and h5py are needed here (torch only to read a pickled `pytorch_model.bin`).

Example:
    >>> from efficientformer.checkpoints.h5 import read_h5, pt_to_keras, read_pt
    >>> weights = read_h5("hf-tiny/tf_model.h5")           # doctest: +SKIP
    >>> same = pt_to_keras(read_pt("hf-tiny/model.safetensors"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import numpy as np

from ..constants import BASE_PREFIX as BACKBONE
from ..constants import HEADS, PT_WEIGHTS_NAMES, TF_WEIGHTS_NAME  # noqa: F401 - TF_WEIGHTS_NAME: callers read it here
from ..errors import CheckpointError, require

# Class name -> the name tf-keras gave the model object (first part of every stored weight name).
MODEL_NAMES = {
    "TFEfficientFormerModel": "tf_efficient_former_model",
    "TFEfficientFormerForImageClassification": "tf_efficient_former_for_image_classification",
    "TFEfficientFormerForImageClassificationWithTeacher": "tf_efficient_former_for_image_classification_with_teacher",
}

# Stored by transformers' TF classes as a non-trainable int32 weight, but it is geometry, not a
# parameter: we rebuild it from `config.resolution` and accept (but never need) it when reading.
NON_WEIGHT_SUFFIXES = ("attention_bias_idxs",)

_BATCHNORMS = ("batchnorm_before", "batchnorm_after", "norm", "batchnorm", "batchnorm_depthwise")  # (the last two: V2)
_PT_TO_KERAS_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                   "running_var": "moving_variance"}
_PT_TO_KERAS_LN = {"weight": "gamma", "bias": "beta"}
_AS_IS = ("layer_scale_1", "layer_scale_2", "attention_biases")


def is_non_weight(name: str) -> bool:
    """True for stored names that are not parameters (the attention-bias index table)."""
    return name.rsplit("/", 1)[-1].split(":")[0] in NON_WEIGHT_SUFFIXES


def is_head(name: str) -> bool:
    """True for the classification heads' weights (`classifier/...`, `distillation_classifier/...`)."""
    return name.split("/", 1)[0] in HEADS


# ------------------------------------------------------------------------------------------- h5 files
def _read_string_list(attrs, name: str) -> list[str]:
    """A list-of-strings attribute, also when tf-keras split it into `name0`, `name1`, ... chunks."""
    if name in attrs:
        values = list(attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in attrs:
            values.extend(attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every dataset of a Keras `tf_model.h5` into {name: array}.

    Args:
        path: a `tf_model.h5` written by transformers 4.x (tf-keras) or by `write_h5`.

    Returns:
        Names without the model name and `:0` (see the module docstring), arrays as stored
        (float32 weights; the int32 `attention_bias_idxs` tables are included, see `is_non_weight`).

    Raises:
        CheckpointError: the file is not an HDF5 file of Keras weights.
    """
    h5py = require("h5py", "tf", "reading tf_model.h5")
    try:
        handle = h5py.File(os.fspath(path), "r")
    except OSError as err:
        raise CheckpointError(f"{path} is not a readable HDF5 file ({err}); re-download or re-save it.") from None
    weights: dict[str, np.ndarray] = {}
    with handle:
        layer_names = _read_string_list(handle.attrs, "layer_names")
        if not layer_names:
            raise CheckpointError(f"{path} has no 'layer_names' attribute: it is not a Keras weights file "
                                  "written by save_weights / save_pretrained.")
        for layer in layer_names:
            if layer not in handle:
                raise CheckpointError(f"{path} lists layer {layer!r} but has no group for it; the file is corrupt.")
            group = handle[layer]
            for stored in _read_string_list(group.attrs, "weight_names"):
                name = "/".join(stored.split("/")[1:]).rsplit(":", 1)[0]
                weights[name] = np.asarray(group[stored])
    return weights


def write_h5(path: str | os.PathLike, weights: Mapping[str, np.ndarray], model_name: str,
             keras_version: str = "3") -> str:
    """Write {name: array} as a `tf_model.h5` that transformers 4.x's TF classes (tf-keras) can load.

    Args:
        path: file to write (replaced atomically).
        weights: names as `read_h5` returns them, in the order to store them (the first part of each name
            is its top-level layer: `efficientformer`, `classifier`, `distillation_classifier`).
        model_name: the tf-keras name of the model class, a value of `MODEL_NAMES`.
        keras_version: stored in the `keras_version` attribute.

    Returns:
        The path written.
    """
    from ..fileio import write_with

    h5py = require("h5py", "tf", "writing tf_model.h5")
    strings = h5py.string_dtype("ascii")
    layers: dict[str, list[str]] = {}
    for name in weights:
        layers.setdefault(name.split("/", 1)[0], []).append(name)

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["backend"] = "tensorflow"
            handle.attrs["keras_version"] = keras_version
            handle.attrs.create("layer_names", np.array(list(layers), dtype=object), dtype=strings)
            for layer, names in layers.items():
                group = handle.create_group(layer)
                stored = [f"{model_name}/{name}:0" for name in names]
                group.attrs.create("weight_names", np.array(stored, dtype=object), dtype=strings)
                for key, name in zip(stored, names):
                    group.create_dataset(key, data=np.asarray(weights[name]))
            handle.create_group("top_level_model_weights").attrs["weight_names"] = np.zeros((0,))

    write_with(path, write)  # h5py writes in place; the temporary file keeps a kill from leaving half of it
    return os.fspath(path)


# ------------------------------------------------------------------------------------ PyTorch files
def read_pt(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as numpy arrays.

    Args:
        path: `model.safetensors` (read with `safetensors.numpy`, no torch needed) or `pytorch_model.bin`
            (read with `torch.load(weights_only=True)`; needs torch).

    Raises:
        CheckpointError: unreadable file, or a `.bin` without torch installed.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        st = require("safetensors.numpy", "tf", "reading model.safetensors")
        try:
            return dict(st.load_file(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file ({err}); re-download it.") from None
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path} is a pickled PyTorch file, which needs torch to read; install torch "
                              "or convert it to model.safetensors.") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} could not be read as a weights-only PyTorch file ({err}).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items() if hasattr(v, "numpy")}


def _split_key(key: str) -> list[str]:
    """'a.blocks.0.b' -> ['a', 'blocks.0', 'b'] (list indices stay with their attribute, as in Keras)."""
    parts: list[str] = []
    for piece in key.split("."):
        if piece.isdigit() and parts:
            parts[-1] += "." + piece
        else:
            parts.append(piece)
    return parts


def pt_to_keras(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convert a transformers-layout PyTorch state dict to Keras weight names and layouts.

    Conv kernels OIHW -> HWIO, linear weights transposed, BatchNorm weight/bias/running_mean/running_var ->
    gamma/beta/moving_mean/moving_variance, LayerNorm weight/bias -> gamma/beta; layer scales and
    attention biases as they are. `num_batches_tracked` and `attention_bias_idxs` are not weights and
    are dropped. A bare-model state dict (keys without `efficientformer.`) gets the prefix.

    Args:
        state_dict: {key: array}, keys as `EfficientFormerForImageClassification(WithTeacher)` or
            `EfficientFormerModel` of transformers (or ours) name them.

    Returns:
        {Keras name: array}; keys it does not know keep a name ending in `?pt:<key>` so that the
        loader reports them as unused.
    """
    bare = not any(k.startswith(BACKBONE + ".") for k in state_dict)
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        parts = _split_key(key)
        if bare and parts[0] not in HEADS:
            parts.insert(0, BACKBONE)
        module, leaf = parts[:-1], parts[-1]
        owner = module[-1] if module else ""
        if leaf in ("num_batches_tracked",) + NON_WEIGHT_SUFFIXES:
            continue
        if leaf in _AS_IS:
            name = leaf
        elif owner.startswith("layernorm") and leaf in _PT_TO_KERAS_LN:
            name = _PT_TO_KERAS_LN[leaf]
        elif owner in _BATCHNORMS and leaf in _PT_TO_KERAS_BN:
            name = _PT_TO_KERAS_BN[leaf]
        elif leaf == "weight" and value.ndim == 4:
            name, value = "kernel", value.transpose(2, 3, 1, 0)
        elif leaf == "weight" and value.ndim == 2:
            name, value = "kernel", value.T
        elif leaf == "bias":
            name = "bias"
        else:
            out[f"?pt:{key}"] = value
            continue
        out["/".join(module + [name])] = np.ascontiguousarray(value)
    return out


def keras_to_pt(weights: Mapping[str, np.ndarray], bare: bool = False) -> dict[str, np.ndarray]:
    """The inverse of `pt_to_keras`: Keras names/layouts -> a transformers-layout PyTorch state dict.

    Args:
        weights: {Keras name: array} (e.g. from `read_h5`); `attention_bias_idxs` tables are dropped.
        bare: strip the `efficientformer.` prefix (for `EfficientFormerModel`).

    Returns:
        {state-dict key: array}, complete as transformers saves it: with each BatchNorm's
        `num_batches_tracked` (0) and each attention's `attention_bias_idxs` buffer (int64 (R*R, R*R)).
    """
    from ..models.attention_bias import bias_index

    inverse_bn = {v: k for k, v in _PT_TO_KERAS_BN.items()}
    inverse_ln = {v: k for k, v in _PT_TO_KERAS_LN.items()}
    out: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        if is_non_weight(name):
            continue
        value = np.asarray(value)
        *module, leaf = name.split("/")
        owner = module[-1] if module else ""
        if leaf in _AS_IS or leaf == "bias":
            key = leaf
        elif owner.startswith("layernorm") and leaf in inverse_ln:
            key = inverse_ln[leaf]
        elif owner in _BATCHNORMS and leaf in inverse_bn:
            key = inverse_bn[leaf]
        elif leaf == "kernel":
            key = "weight"
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        else:
            raise CheckpointError(f"weight {name!r} has no PyTorch counterpart; is it an EfficientFormer weight?")
        if bare and module and module[0] == BACKBONE:
            module = module[1:]
        out[".".join(module + [key])] = np.ascontiguousarray(value)
        if owner in _BATCHNORMS and key == "running_var":
            out[".".join(module + ["num_batches_tracked"])] = np.array(0, dtype=np.int64)
        if key == "attention_biases":
            side = int(round(value.shape[1] ** 0.5))
            out[".".join(module + ["attention_bias_idxs"])] = bias_index(side, side).astype(np.int64)
    return out


def find_weights_file(name_or_path: str | os.PathLike, from_pt: bool | None = None,
                      **hub_kwargs) -> tuple[str, bool]:
    """Locate the weights of a folder or hub id: `tf_model.h5`, else PyTorch weights.

    Args:
        name_or_path: folder, hub id, or a weights file.
        from_pt: True: PyTorch weights only; False: `tf_model.h5` only; None: `tf_model.h5` when it
            exists, else `model.safetensors`, else `pytorch_model.bin`.
        **hub_kwargs: revision, cache_dir, local_files_only, token.

    Returns:
        (path, is_pytorch).

    Raises:
        CheckpointError: no suitable file.
    """
    from .hub import resolve_file

    name = os.fspath(name_or_path)
    if os.path.isfile(name):
        is_pt = not name.endswith(".h5")
        if from_pt is False and is_pt:
            raise CheckpointError(f"{name} holds PyTorch weights; pass from_pt=True (or None) to convert them.")
        return name, is_pt
    candidates: Iterable[tuple[str, bool]] = []
    if from_pt is not True:
        candidates = [(TF_WEIGHTS_NAME, False)]
    if from_pt is not False:
        candidates = [*candidates, *((f, True) for f in PT_WEIGHTS_NAMES)]
    tried = []
    for filename, is_pt in candidates:
        path = resolve_file(name, filename, required=False, **hub_kwargs)
        if path is not None:
            return path, is_pt
        tried.append(filename)
    hint = " (pass from_pt=None to also look for PyTorch weights)" if from_pt is False else ""
    raise CheckpointError(f"{name} has none of {', '.join(tried)}{hint}; point at a folder written by "
                          "save_pretrained or a hub id with weights.")
