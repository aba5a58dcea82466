"""Loading and saving of the PyTorch classes: `from_pretrained` (every checkpoint layout, through
`efficientformer.checkpoints.load_checkpoint`), `load_pretrained_state_dict` with its loading report
(missing / unexpected / mismatched keys, the same report as the Keras classes give), and
`save_pretrained` in the folder layout transformers 4.57 loads."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from ...config import EfficientFormerConfig
from ...constants import BASE_PREFIX, HEADS, PYTORCH_BIN_NAME, SAFETENSORS_NAME
from ...errors import CheckpointError, require
from ..outputs import features_arguments, loading_report

torch = require("torch", "torch", "the PyTorch EfficientFormer classes")

logger = logging.getLogger("efficientformer")


def is_head(key: str) -> bool:
    """Whether a state-dict key belongs to a classification head (not the backbone)."""
    return key.startswith(tuple(f"{head}." for head in HEADS))


class PretrainedIO:
    """`from_pretrained`, `load_pretrained_state_dict` and `save_pretrained` of `EfficientFormerPreTrainedModel`."""

    supports_features_only = False  # EfficientFormerModel: from_pretrained may build a features-only backbone

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, config: EfficientFormerConfig | None = None,
                        revision: str | None = None, cache_dir: str | None = None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        ignore_mismatched_sizes: bool = False, torch_dtype: Any = None,
                        output_loading_info: bool = False, allow_training_args: bool = False,
                        features_only: bool = False, out_indices: int | Sequence[int] | None = None,
                        **config_overrides: Any):
        """Load a model from a folder, a hub id or a weights file of any supported format.

        Args:
            name_or_path: folder written by `save_pretrained` (transformers' layout), a timm hub folder, a
                hub id such as `"snap-research/efficientformer-l1-300"`, or a `.safetensors`/`.bin`/`.pth` file.
            config: use this configuration instead of the checkpoint's.
            revision, cache_dir, local_files_only, token: passed to the hub (offline from its cache with
                `HF_HUB_OFFLINE=1`).
            ignore_mismatched_sizes: re-initialize weights whose shape differs (e.g. a new `num_labels`)
                instead of raising.
            torch_dtype: dtype of the loaded model (`torch.float16`, `"bfloat16"`, `"auto"` = as stored).
            output_loading_info: also return `{"missing_keys", "unexpected_keys", "mismatched_keys"}`.
            allow_training_args: read a training checkpoint of the original repository, whose pickle holds an
                `argparse.Namespace` (only that class is allowed; see `efficientformer.checkpoints.loading`).
            features_only, out_indices: `EfficientFormerModel` only: build the features-only backbone that
                returns the maps of these stages (all with `features_only=True`), as timm's `features_only`.
            **config_overrides: config fields to change, e.g. `num_labels=10` or `id2label={...}`.

        Raises:
            CheckpointError: the files are missing, corrupt, or do not fit the model.

        Example:
            >>> model = EfficientFormerForImageClassification.from_pretrained("path/to/folder", num_labels=5,
            ...                                                              ignore_mismatched_sizes=True)
        """
        from ...checkpoints.loading import load_checkpoint

        features = features_arguments(cls, features_only, out_indices)
        checkpoint = load_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir,
                                     local_files_only=local_files_only, token=token,
                                     allow_training_args=allow_training_args)
        config = config or checkpoint.config
        if config_overrides:
            config = config.copy(**config_overrides)
        model = cls(config, **features)
        info = model.load_pretrained_state_dict(checkpoint.state_dict, ignore_mismatched_sizes=ignore_mismatched_sizes)
        model.processor_settings = checkpoint.processor
        if torch_dtype == "auto":
            floats = [t.dtype for t in checkpoint.state_dict.values() if t.is_floating_point()]
            torch_dtype = floats[0] if floats else None
        if isinstance(torch_dtype, str):
            torch_dtype = getattr(torch, torch_dtype)
        if torch_dtype is not None:
            model.to(torch_dtype)
        model.eval()
        return (model, info) if output_loading_info else model

    def load_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor], *,
                                   ignore_mismatched_sizes: bool = False) -> dict[str, list]:
        """Load a transformers-layout state dict (with or without the `efficientformer.` prefix).

        Backbone weights must all be present and of the right shape; head weights that are missing or
        (with `ignore_mismatched_sizes`) of another shape are re-initialized and reported.
        """
        state_dict = self._align_prefix(state_dict)
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and not k.endswith("attention_bias_idxs")]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [(k, tuple(state_dict[k].shape), tuple(own[k].shape))
                      for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
        if mismatched and not ignore_mismatched_sizes:
            lines = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched[:5])
            raise CheckpointError(f"the checkpoint does not fit this model ({len(mismatched)} weights of another shape: "
                                  f"{lines}); check the config, or pass ignore_mismatched_sizes=True to "
                                  "re-initialize them (e.g. for a new number of labels).")
        backbone_missing = [k for k in missing if not is_head(k)]
        if backbone_missing:
            raise CheckpointError(f"the checkpoint lacks {len(backbone_missing)} backbone weights of this model, "
                                  f"e.g. {backbone_missing[:3]}; it was saved for another architecture or is incomplete.")
        bad = {k for k, _, _ in mismatched}
        self.load_state_dict({k: v for k, v in state_dict.items() if k in own and k not in bad}, strict=False)
        if missing or bad:
            logger.warning("newly initialized weights (train them before use): %s", sorted(missing + list(bad)))
        if unexpected:
            logger.info("weights of the checkpoint not used by %s: %s", type(self).__name__, unexpected)
        return loading_report(missing, unexpected, mismatched)

    def _align_prefix(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prefix = BASE_PREFIX + "."
        has_prefix = any(k.startswith(prefix) for k in state_dict)
        wants_prefix = any(k.startswith(prefix) for k in self.state_dict())
        if has_prefix and not wants_prefix:  # a classifier checkpoint into the bare model
            return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
        if wants_prefix and not has_prefix:  # a bare-model checkpoint into a classifier
            return {k if is_head(k) else prefix + k: v for k, v in state_dict.items()}
        return dict(state_dict)

    def save_pretrained(self, folder: str, *, safe_serialization: bool = True,
                        processor: Any = None) -> None:
        """Write `config.json`, `model.safetensors` (or `pytorch_model.bin`) and `preprocessor_config.json`
        in the layout transformers 4.57 loads.

        Args:
            folder: created if needed. The write is atomic (a kill leaves the old model or the new one);
                the model files of a model already there are all replaced (no stale `.bin` or
                `tf_model.h5` stays beside the new weights), other files in the folder are kept.
            safe_serialization: safetensors (default) or a pickled `.bin` of tensors only.
            processor: an `EfficientFormerImageProcessor` or its settings; defaults to the settings the
                model was loaded with, else the released checkpoints' preprocessing (shortest edge 256,
                bicubic, center crop 224, ImageNet mean and std).
        """
        from ...checkpoints.folder import DEFAULT, write_model_folder

        config = self.config.copy()
        config.extra["architectures"] = [type(self).__name__]
        config.extra["dtype"] = str(self.dtype).replace("torch.", "")
        if processor is None:
            processor = self.processor_settings
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if safe_serialization:
            from safetensors.torch import save_file

            weights = {SAFETENSORS_NAME: lambda path: save_file(state, path, metadata={"format": "pt"})}
        else:
            weights = {PYTORCH_BIN_NAME: lambda path: torch.save(state, path)}
        # one folder writer for every saved model: atomic, no stale weight files, processor checked first
        write_model_folder(folder, config=config, weights=weights, processor=processor or DEFAULT)


__all__ = ["PretrainedIO", "is_head"]
