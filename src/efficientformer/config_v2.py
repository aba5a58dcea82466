"""`EfficientFormerV2Config`: the architecture and labels of an EfficientFormerV2 model, as a `config.json`.

The labels, `problem_type`, unknown keys and the JSON reading and writing are those of every family
(`efficientformer.config.LabelledConfig`); this module adds V2's architecture fields and their checks.
The attention-bias grids follow from `image_size`, the size the model was trained at (224: a 14 x 14
table for the downsampling attention, 7 x 7 for the others); other input sizes resize them.
"""

from __future__ import annotations

from typing import Any

from .config import (
    MAX_DEPTH,
    MAX_IMAGE_SIZE,
    MAX_RATIO,
    MAX_WIDTH,
    MODEL_TYPE_V2,
    LabelledConfig,
    _is_int,
    _is_number,
    _show,
)
from .errors import ConfigError
from .presets import V2_VARIANTS

NUM_STAGES_V2 = 4  # the stage roles are fixed: two convolutional stages, then two with attention blocks

_S0 = V2_VARIANTS["s0"]
# Every architecture field with its default (S0's shape, timm's and the original code's settings); JSON order.
_DEFAULTS_V2: dict[str, Any] = {
    "depths": list(_S0.depths),
    "hidden_sizes": list(_S0.hidden_sizes),
    "mlp_ratios": [list(stage) for stage in _S0.mlp_ratios],
    "num_attention_blocks": _S0.num_attention_blocks,
    "key_dim": 32,
    "num_attention_heads": 8,
    "attention_ratio": 4,
    "downsample_key_dim": 16,
    "downsample_num_attention_heads": 8,
    "downsample_attention_ratio": 4,
    "image_size": 224,
    "num_channels": 3,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "use_layer_scale": True,
    "layer_scale_init_value": 1e-5,
    "batch_norm_eps": 1e-5,
    "distillation": True,
    "initializer_range": 0.02,
}
_INT_RANGES_V2 = {
    "key_dim": (1, 1024), "num_attention_heads": (1, 256), "downsample_key_dim": (1, 1024),
    "downsample_num_attention_heads": (1, 256), "num_channels": (1, 1024), "image_size": (32, MAX_IMAGE_SIZE),
}
_RATIOS_V2 = ("attention_ratio", "downsample_attention_ratio")


def expand_mlp_ratios(ratios: Any, depths: Any) -> Any:
    """`mlp_ratios` as one list per stage with one ratio per block: a single number applies to every block,
    a number in a stage's place to each of its blocks (timm's forms). Anything else is returned as given,
    for `validate` to name."""
    if not isinstance(depths, (list, tuple)) or not all(_is_int(d) for d in depths):
        return ratios
    if _is_number(ratios):
        return [[ratios] * d for d in depths]
    if isinstance(ratios, (list, tuple)) and len(ratios) == len(depths):
        return [[r] * d if _is_number(r) else list(r) if isinstance(r, (list, tuple)) else r
                for r, d in zip(ratios, depths)]
    return ratios


class EfficientFormerV2Config(LabelledConfig):
    """Architecture, labels and task of an EfficientFormerV2 model (Li et al., 2023).

    Args:
        depths: blocks per stage, four stages (S0: `[2, 2, 6, 4]`).
        hidden_sizes: channels per stage (S0: `[32, 48, 96, 176]`).
        mlp_ratios: the MLP expansion of every block, one list per stage (a number, or one number per
            stage, is expanded to that form).
        num_attention_blocks: how many of the last blocks of stages 3 and 4 are attention blocks (timm's
            `num_vit`); a stage with fewer blocks has attention in all of them.
        key_dim, num_attention_heads, attention_ratio: the attention of those blocks (value size per head is
            `attention_ratio * key_dim`).
        downsample_key_dim, downsample_num_attention_heads, downsample_attention_ratio: the local-global
            attention of the downsampling into stage 4.
        image_size: the input size the attention biases were trained at (224); any other size works, the
            biases are resized to it.
        drop_path_rate: stochastic-depth rate of the last block (rates rise linearly from 0).
        hidden_act: activation of the stem, MLPs and attention, one of `ACTIVATIONS`.
        id2label / label2id / num_labels / problem_type / **kwargs: as `EfficientFormerConfig`.

    Example:
        >>> from efficientformer import EfficientFormerV2Config
        >>> config = EfficientFormerV2Config.from_preset("s1", num_labels=10)
        >>> config.hidden_sizes, config.mlp_ratios[3], config.num_labels
        ([32, 48, 120, 224], [4, 4, 3, 3, 4, 4], 10)
    """

    model_type = MODEL_TYPE_V2
    _defaults = _DEFAULTS_V2

    def _read_derived(self, kwargs: dict[str, Any]) -> None:
        self.mlp_ratios = expand_mlp_ratios(self.mlp_ratios, self.depths)

    # ----------------------------------------------------------------------------- derived shape
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def block_drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of every block in order: 0 for the first, `drop_path_rate` for the last."""
        total = sum(self.depths)
        return [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]

    # ------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise `ConfigError` (a ValueError) naming the first invalid field, its value and what is allowed,
        with the same type rules and size caps as `EfficientFormerConfig.validate`."""
        def bad(field: str, allowed: str) -> None:
            raise ConfigError(f"{field}={_show(getattr(self, field))} is invalid: {allowed}.")

        for field in ("depths", "hidden_sizes", "mlp_ratios"):
            if not isinstance(getattr(self, field), (list, tuple)):
                bad(field, "it must be a list with one entry per stage")
        if len(self.depths) != NUM_STAGES_V2:
            bad("depths", f"EfficientFormerV2 has {NUM_STAGES_V2} stages; give one depth for each")
        if not all(_is_int(d) and 1 <= d <= MAX_DEPTH for d in self.depths):
            bad("depths", f"every stage needs a whole number of blocks from 1 to {MAX_DEPTH}")
        if len(self.hidden_sizes) != NUM_STAGES_V2:
            bad("hidden_sizes", f"it needs one entry per stage ({NUM_STAGES_V2}, as depths)")
        if not all(_is_int(h) and 2 <= h <= MAX_WIDTH for h in self.hidden_sizes):
            bad("hidden_sizes", f"widths must be whole numbers from 2 to {MAX_WIDTH} (the stem has half as many "
                "channels as the first stage)")
        if len(self.mlp_ratios) != NUM_STAGES_V2 or not all(
                isinstance(stage, list) and len(stage) == depth for stage, depth in zip(self.mlp_ratios, self.depths)):
            bad("mlp_ratios", f"give one ratio per block of each stage (depths {self.depths}), or one per stage")
        for stage, width in zip(self.mlp_ratios, self.hidden_sizes):
            if not all(_is_number(r) and 0 < r <= MAX_RATIO and int(width * r) >= 1 for r in stage):
                bad("mlp_ratios", f"ratios must be positive numbers up to {MAX_RATIO} giving each MLP a hidden unit")
        if not (_is_int(self.num_attention_blocks) and 0 <= self.num_attention_blocks <= MAX_DEPTH):
            bad("num_attention_blocks", f"it must be a whole number from 0 to {MAX_DEPTH}")
        for field, (low, high) in _INT_RANGES_V2.items():
            if not (_is_int(getattr(self, field)) and low <= getattr(self, field) <= high):
                bad(field, f"it must be a whole number from {low} to {high}")
        for field in _RATIOS_V2:
            if not (_is_number(getattr(self, field)) and 0 < getattr(self, field) <= MAX_RATIO):
                bad(field, f"it must be a positive number up to {MAX_RATIO}")
        if int(self.attention_ratio * self.key_dim) < 1:
            bad("attention_ratio", f"attention_ratio * key_dim ({self.key_dim}) must be at least 1")
        if int(self.downsample_attention_ratio * self.downsample_key_dim) < 1:
            bad("downsample_attention_ratio", "downsample_attention_ratio * downsample_key_dim "
                f"({self.downsample_key_dim}) must be at least 1")
        for field in ("use_layer_scale", "distillation"):
            if not isinstance(getattr(self, field), bool):
                bad(field, "it must be true or false")
        self._validate_shared()

    _largest = "the largest EfficientFormerV2, L, has 26 million"
    _size_fields = "depths, hidden_sizes, mlp_ratios or num_labels"

    def _expected_shapes(self) -> dict[str, tuple]:
        from .checkpoints.shapes_v2 import expected_shapes_v2

        return expected_shapes_v2(self)

    # ------------------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EfficientFormerV2Config":
        """The paper's S0, S1, S2 or L shape (1000 ImageNet classes unless overridden)."""
        from .presets import get_variant_v2

        return cls.from_dict(get_variant_v2(name).config_kwargs(), **overrides)


__all__ = ["EfficientFormerV2Config", "MODEL_TYPE_V2", "expand_mlp_ratios"]
