"""The paper's variants as table rows, and the released weights as data.

One row per variant: widths, depths and attention blocks (Li et al., 2022, Table 1). Everything else
(key size, heads, MLP ratio) is shared and comes from the config defaults. EfficientFormerV2's variants
(Li et al., 2023) are rows of their own table, `V2_VARIANTS`, with their per-block MLP ratios.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .constants import IMAGENET_MEAN, IMAGENET_STD

# The preprocessing of the released checkpoints (their preprocessor_config.json).
RELEASED_PREPROCESSING: dict[str, Any] = {
    "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "resample": 3,
    "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}


@dataclass(frozen=True)
class Variant:
    """One row of the paper's model table: depths, widths and number of attention (Meta3D) blocks."""

    name: str
    depths: tuple[int, int, int, int]
    hidden_sizes: tuple[int, int, int, int]
    num_meta3d_blocks: int
    num_parameters: int  # with both 1000-class heads, as the released checkpoints hold them

    def config_kwargs(self) -> dict[str, Any]:
        """The `EfficientFormerConfig` fields of this variant, with the 1000 ImageNet class names."""
        from .labels import imagenet_id2label

        return {
            "depths": list(self.depths),
            "hidden_sizes": list(self.hidden_sizes),
            "dim": self.hidden_sizes[-1],
            "hidden_size": self.hidden_sizes[-1],
            "num_meta3d_blocks": self.num_meta3d_blocks,
            "id2label": imagenet_id2label(),
        }


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    #        name  depths          widths                 Meta3D  parameters
    Variant("l1", (3, 2, 6, 4), (48, 96, 224, 448), 1, 12_289_928),
    Variant("l3", (4, 4, 12, 6), (64, 128, 320, 512), 4, 31_406_000),
    Variant("l7", (6, 6, 18, 8), (96, 192, 384, 768), 8, 82_229_328),
)}


@dataclass(frozen=True)
class Weights:
    """A released checkpoint: where it lives, how to preprocess for it, and what it scores."""

    variant: str
    hub_id: str
    timm_id: str
    original_file: str
    top1: float  # ImageNet-1k validation, 224x224, from the paper
    mobile_latency_ms: float  # iPhone 12, CoreML, from the paper
    gmacs: float
    preprocessing: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(RELEASED_PREPROCESSING))
    labels: str = "imagenet-1k"


WEIGHTS: dict[str, Weights] = {w.variant: w for w in (
    Weights("l1", "snap-research/efficientformer-l1-300", "efficientformer_l1.snap_dist_in1k",
            "efficientformer_l1_300d.pth", 79.2, 1.6, 1.3),
    Weights("l3", "snap-research/efficientformer-l3-300", "efficientformer_l3.snap_dist_in1k",
            "efficientformer_l3_300d.pth", 82.4, 3.0, 3.9),
    Weights("l7", "snap-research/efficientformer-l7-300", "efficientformer_l7.snap_dist_in1k",
            "efficientformer_l7_300d.pth", 83.3, 7.0, 10.2),
)}


# ------------------------------------------------------------------------------------- EfficientFormerV2
@dataclass(frozen=True)
class VariantV2:
    """One row of EfficientFormerV2's model table: depths, widths, the MLP ratio of every block, the number
    of attention blocks at the end of each of the last two stages, and the stochastic depth it trained with."""

    name: str
    depths: tuple[int, int, int, int]
    hidden_sizes: tuple[int, int, int, int]
    mlp_ratios: tuple[tuple[float, ...], ...]  # one per block, stage by stage
    num_attention_blocks: int
    drop_path_rate: float
    num_parameters: int  # with both 1000-class heads

    def config_kwargs(self) -> dict[str, Any]:
        """The `EfficientFormerV2Config` fields of this variant, with the 1000 ImageNet class names."""
        from .labels import imagenet_id2label

        return {"depths": list(self.depths), "hidden_sizes": list(self.hidden_sizes),
                "mlp_ratios": [list(stage) for stage in self.mlp_ratios],
                "num_attention_blocks": self.num_attention_blocks, "drop_path_rate": self.drop_path_rate,
                "id2label": imagenet_id2label()}


_4 = (4,)
V2_VARIANTS: dict[str, VariantV2] = {v.name: v for v in (
    #         name  depths          widths              MLP ratios per block
    VariantV2("s0", (2, 2, 6, 4), (32, 48, 96, 176),
              (_4 * 2, _4 * 2, (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)), 2, 0.0, 3_600_256),
    VariantV2("s1", (3, 3, 9, 6), (32, 48, 120, 224),
              (_4 * 3, _4 * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)), 2, 0.0, 6_185_560),
    VariantV2("s2", (4, 4, 12, 8), (32, 64, 144, 288),
              (_4 * 4, _4 * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)), 4, 0.02, 12_710_112),
    VariantV2("l", (5, 5, 15, 10), (40, 80, 192, 384),
              (_4 * 5, _4 * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)), 6, 0.1,
              26_322_288),
)}

# The released V2 checkpoints (timm's hub folders and the snap-research files): top-1 on ImageNet-1k at 224 of
# the 450-epoch release the files are (snap-research's README; the paper's 300-epoch models score 75.7, 79.0,
# 81.6, 83.3), GMACs and iPhone 12 latency from the paper; timm's pretrained_cfg gives their preprocessing
# (crop_pct 0.95, bicubic, ImageNet mean/std).
V2_PREPROCESSING: dict[str, Any] = {
    "size": {"shortest_edge": 235}, "crop_size": {"height": 224, "width": 224}, "resample": 3,
    "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
V2_WEIGHTS: dict[str, Weights] = {w.variant: w for w in (
    Weights("s0", "timm/efficientformerv2_s0.snap_dist_in1k", "efficientformerv2_s0.snap_dist_in1k",
            "eformer_s0_450.pth", 76.2, 0.9, 0.40, copy.deepcopy(V2_PREPROCESSING)),
    Weights("s1", "timm/efficientformerv2_s1.snap_dist_in1k", "efficientformerv2_s1.snap_dist_in1k",
            "eformer_s1_450.pth", 79.7, 1.1, 0.65, copy.deepcopy(V2_PREPROCESSING)),
    Weights("s2", "timm/efficientformerv2_s2.snap_dist_in1k", "efficientformerv2_s2.snap_dist_in1k",
            "eformer_s2_450.pth", 82.0, 1.6, 1.25, copy.deepcopy(V2_PREPROCESSING)),
    Weights("l", "timm/efficientformerv2_l.snap_dist_in1k", "efficientformerv2_l.snap_dist_in1k",
            "eformer_l_450.pth", 83.5, 2.7, 2.56, copy.deepcopy(V2_PREPROCESSING)),
)}


def _v2_key(name: str) -> str:
    key = name.lower()
    for prefix in ("efficientformerv2_", "efficientformerv2-", "efficientformer-v2-", "efficientformer_v2_", "v2-",
                   "v2_"):
        key = key.replace(prefix, "")
    return key


def get_variant_v2(name: str) -> VariantV2:
    """The V2 row of `name` (`"s0"`, `"efficientformerv2_s0"`, `"v2-s0"`, ...)."""
    key = _v2_key(name)
    if key not in V2_VARIANTS:
        from .errors import ConfigError

        raise ConfigError(f"unknown EfficientFormerV2 preset {name!r}; choose one of {', '.join(V2_VARIANTS)}.")
    return V2_VARIANTS[key]


def get_variant(name: str) -> Variant:
    key = name.lower().replace("efficientformer-", "").replace("efficientformer_", "")
    if key not in VARIANTS:
        from .errors import ConfigError

        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(VARIANTS)}.")
    return VARIANTS[key]
