"""Loading and saving of the Keras classes: `from_pretrained` (`tf_model.h5`, or PyTorch weights of any
layout converted with `efficientformer.checkpoints.h5`), `load_weights_dict` with its loading report
(missing / unexpected / mismatched keys, the same report as the PyTorch classes give), and
`save_pretrained` (`tf_model.h5` in transformers 4.x's layout)."""

from __future__ import annotations

import json
import logging
import os
import warnings

import numpy as np

from ...checkpoints import h5 as tf_weights
from ...config import EfficientFormerConfig
from ...constants import HUB_KEYWORDS, PREPROCESSOR_NAME, TF_WEIGHTS_NAME
from ...errors import CheckpointError, require
from ..attention_bias import bias_index
from ..outputs import features_arguments, loading_report

keras = require("keras", "tf", "the TensorFlow classes")

logger = logging.getLogger("efficientformer")


class PretrainedIO:
    """`from_pretrained`, `load_weights_dict` and `save_pretrained` of `TFEfficientFormerPreTrainedModel`."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, from_pt: bool | None = None,
                        config: EfficientFormerConfig | None = None, **kwargs):
        """Load weights from a folder or hub id: `tf_model.h5` (transformers 4.x layout) or PyTorch weights.

        Args:
            name_or_path: folder written by `save_pretrained` (ours or transformers'), a hub id such as
                `"snap-research/efficientformer-l1-300"`, or a `tf_model.h5` / `.safetensors` / `.bin` file
                (with a `config.json` beside it, or `config`). With torch installed, PyTorch weights of every
                layout `efficientformer.checkpoints.loading.load_checkpoint` reads also work (timm hub folders and
                ids, the original release's `.pth`); without torch, `model.safetensors` in transformers' layout.
            from_pt: True: convert `model.safetensors` / `pytorch_model.bin`; False: only `tf_model.h5`;
                None (default): `tf_model.h5` when present, else the PyTorch weights.
            config: use this configuration instead of the checkpoint's.
            output_loading_info: also return the loading report (`load_weights_dict`), as the PyTorch classes.
            features_only, out_indices: `TFEfficientFormerModel` only: build the features-only backbone that
                returns the maps of these stages (all with `features_only=True`), as the PyTorch class.
            **kwargs: hub arguments (`revision`, `cache_dir`, `local_files_only`, `token`); any other key
                changes the configuration, e.g. `num_labels=10` (the heads are then newly initialized).

        Returns:
            The model with its weights, ready for inference (`training=False` is the default).

        Raises:
            CheckpointError: no weights, weights missing (reported by name) or of another shape.

        Example:
            >>> model = TFEfficientFormerForImageClassification.from_pretrained(  # doctest: +SKIP
            ...     "snap-research/efficientformer-l1-300", num_labels=5)
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        features = features_arguments(cls, kwargs.pop("features_only", False), kwargs.pop("out_indices", None))
        hub = {k: kwargs.pop(k) for k in HUB_KEYWORDS if k in kwargs}
        name = os.fspath(name_or_path)
        folder = (os.path.dirname(name) or ".") if os.path.isfile(name) else name
        path, is_pt = tf_weights.find_weights_file(name, from_pt=from_pt, **hub)
        processor = None
        if is_pt and _torch_available():
            # any PyTorch layout (transformers, timm, original release), config inferred when absent
            from ...checkpoints.loading import load_checkpoint

            checkpoint = load_checkpoint(name, **hub)
            stored_config, processor, path = checkpoint.config, checkpoint.processor, checkpoint.source
            weights = tf_weights.pt_to_keras({k: v.detach().cpu().float().numpy() if v.is_floating_point()
                                              else v.cpu().numpy() for k, v in checkpoint.state_dict.items()})
        else:
            stored_config = cls.config_class.from_pretrained(folder, **hub) if config is None or kwargs else None
            weights = tf_weights.pt_to_keras(tf_weights.read_pt(path)) if is_pt else tf_weights.read_h5(path)
            processor = _processor_settings(folder, hub)
        if config is None:
            config = stored_config
        if kwargs:
            config = config.copy(**kwargs)
        reinit_heads = stored_config is not None and stored_config.num_labels != config.num_labels
        model = cls(config, **features)
        info = model.load_weights_dict(weights, reinit_heads=reinit_heads, source=path)
        model.image_processor = processor
        return (model, info) if output_loading_info else model

    def load_weights_dict(self, weights: dict[str, np.ndarray], reinit_heads: bool = False,
                          source: str = "the checkpoint") -> dict[str, list[str]]:
        """Assign {name: array} (names as `named_weights()`, e.g. from `tf_weights.read_h5`).

        Every model weight must be given with its shape, except the heads when `reinit_heads` (a new
        `num_labels`), which keep their fresh initialization. Weights of the file the model does not use
        are reported with a warning (e.g. the distillation head when loading a WithTeacher checkpoint into
        `TFEfficientFormerForImageClassification`).

        Returns:
            The loading report, as the PyTorch classes': `missing_keys` (heads the file lacks, newly
            initialized), `unexpected_keys` (weights of the file not used) and `mismatched_keys` ((name,
            file shape, model shape) of heads newly initialized for a new `num_labels`).

        Raises:
            CheckpointError: a missing weight or a shape mismatch, naming the weights.
        """
        named = self.named_weights()
        given = {k: v for k, v in weights.items() if not tf_weights.is_non_weight(k)}
        if len(given) and not any(k.startswith("efficientformer/") for k in given):
            raise CheckpointError(f"{source} holds no EfficientFormer backbone weights (names like "
                                  "'efficientformer/patch_embed/...'); it is not an EfficientFormer checkpoint.")
        skip = {k for k in named if reinit_heads and tf_weights.is_head(k)}
        missing = [k for k in named if k not in given and k not in skip]
        wrong_shapes = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(named[k].shape)}"
                        for k in named if k in given and k not in skip and tuple(given[k].shape) != tuple(named[k].shape)]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise CheckpointError(f"{source} lacks {len(missing)} weights of {type(self).__name__}: {shown}. It was "
                                  "saved for another architecture or is incomplete; to train new heads pass num_labels.")
        if wrong_shapes:
            shown = "; ".join(wrong_shapes[:5])
            raise CheckpointError(f"{source} does not fit {type(self).__name__} ({len(wrong_shapes)} weights of "
                                  f"another shape: {shown}); check the config (depths, hidden_sizes, resolution, num_labels).")
        for name, variable in named.items():
            if name not in skip:
                variable.assign(np.asarray(given[name], dtype=variable.dtype))
        unused = sorted(k for k in given if k not in named and not (k in skip or (reinit_heads and tf_weights.is_head(k))))
        unused = [k.replace("?pt:", "") for k in unused]
        if unused:
            warnings.warn(f"{len(unused)} weights of {source} are not used by {type(self).__name__}: "
                          f"{', '.join(unused[:8])}{' ...' if len(unused) > 8 else ''}", stacklevel=3)
        if skip:
            logger.warning("newly initialized heads (num_labels changed; train them before use): %s", sorted(skip))
        mismatched = [(k, tuple(given[k].shape), tuple(named[k].shape)) for k in sorted(skip) if k in given]
        return loading_report(sorted(k for k in skip if k not in given), unused, mismatched)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `tf_model.h5` (transformers 4.x layout: transformers' TF classes load it), `config.json`
        and `preprocessor_config.json` (the processor the model was loaded with, else the default one).

        Example:
            >>> model.save_pretrained("my-efficientformer")                                # doctest: +SKIP
            >>> TFEfficientFormerForImageClassification.from_pretrained("my-efficientformer")  # doctest: +SKIP
        """
        from ...checkpoints.folder import write_model_folder
        from ...preprocessing.processor import EfficientFormerImageProcessor

        if not self.built:
            self.build()
        config = self.config.copy()
        config.extra["architectures"] = [type(self).__name__[2:]]
        weights = {name: np.asarray(v.numpy()) for name, v in self.named_weights().items()}
        trainable = {name: w for name, w in weights.items() if not name.rsplit("/", 1)[-1].startswith("moving_")}
        ordered = dict(trainable)
        # transformers' non-trainable index tables (V1 only: transformers never had EfficientFormerV2)
        for block in _meta3d_prefixes(weights) if hasattr(self.config, "resolution") else ():
            r = self.config.resolution
            ordered[f"{block}/token_mixer/attention_bias_idxs"] = bias_index(r, r).astype(np.int32)
        ordered.update({name: w for name, w in weights.items() if name not in trainable})
        processor = self.image_processor  # the settings the model was loaded with, else the default ones
        if not isinstance(processor, EfficientFormerImageProcessor):
            processor = EfficientFormerImageProcessor.from_dict(processor or {})
        # one folder writer for every saved model: atomic, and an older model.safetensors / pytorch_model.bin
        # there (which loaders prefer) does not survive
        write_model_folder(folder, config=config, processor=processor, weights={
            TF_WEIGHTS_NAME: lambda path: tf_weights.write_h5(path, ordered, self.keras_name,
                                                              keras_version=keras.__version__)})


def _meta3d_prefixes(weights: dict) -> list[str]:
    suffix = "/token_mixer/attention_biases"
    return [name[: -len(suffix)] for name in weights if name.endswith(suffix)]


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _processor_settings(folder, hub: dict) -> dict | None:
    """The checkpoint's `preprocessor_config.json` settings, or None when it has none."""
    from ...checkpoints.hub import resolve_file

    try:
        path = resolve_file(folder, PREPROCESSOR_NAME, required=False, **hub)
    except CheckpointError:
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


__all__ = ["PretrainedIO"]
