"""The paper's variants as table rows, and the released weights as data.

One row per variant: widths, depths and attention blocks (Li et al., 2022, Table 1). Everything else
(key size, heads, MLP ratio) is shared and comes from the config defaults.
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


def get_variant(name: str) -> Variant:
    key = name.lower().replace("efficientformer-", "").replace("efficientformer_", "")
    if key not in VARIANTS:
        from .errors import ConfigError

        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(VARIANTS)}.")
    return VARIANTS[key]
