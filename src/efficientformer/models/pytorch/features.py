"""timm's feature API of the PyTorch classes: `feature_info`, the dense stage maps of
`forward_intermediates`, `prune_intermediate_layers`, and the token pooling before the heads."""

from __future__ import annotations

from typing import Any, Sequence

from ...errors import InputError, require
from ..architecture import plan
from ..outputs import FeatureInfo, intermediates_request, stage_feature_info, take_indices

torch = require("torch", "torch", "the PyTorch EfficientFormer classes")


def pool_tokens(tokens: Any, width: int) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C) mean, the pooling before the heads."""
    if torch.jit.is_tracing():  # shapes are traced values there; the example input had the right ones
        return tokens.mean(dim=1)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[-1] != width:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise InputError(f"forward_head takes the (batch, tokens, {width}) output of forward_features, got {shape}.")
    return tokens.mean(dim=1)


class FeatureInfoMixin:
    """`feature_info` of every class (the classifiers name the backbone's modules under `efficientformer.`)."""

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction (stride) and module path of each stage's map in `forward_intermediates`,
        as timm's `feature_info` (a list of dicts; `.channels()` and `.reduction()` as timm's FeatureInfo).

        Example:
            >>> from efficientformer import EfficientFormerConfig, EfficientFormerModel
            >>> info = EfficientFormerModel(EfficientFormerConfig.from_preset("l1")).feature_info
            >>> info.channels(), info.reduction(), info[3]["module"]
            ([48, 96, 224, 448], [4, 8, 16, 32], 'encoder.last_stage')
        """
        backbone = self if not hasattr(self, "efficientformer") else self.efficientformer
        prefix = "" if backbone is self else self.base_model_prefix + "."
        return stage_feature_info(self.config, prefix, ".", backbone.out_indices)

    def _features_only_maps(self, pixel_values: Any, output_attentions: Any, output_hidden_states: Any):
        """What a features-only backbone's call returns, its stage maps (None for an ordinary backbone)."""
        if getattr(self, "out_indices", None) is None:
            return None
        if output_attentions or output_hidden_states:
            raise InputError(f"a features-only backbone (out_indices={self.out_indices}) returns its stage "
                             f"maps only; build {type(self).__name__} without out_indices for attentions "
                             "or hidden states.")
        return self.forward_intermediates(pixel_values, self.out_indices, intermediates_only=True)


class FeaturesOnlyBackbone:
    """`prune_intermediate_layers` and `forward_intermediates` of `EfficientFormerModel`."""

    def prune_intermediate_layers(self, indices: int | Sequence[int] | None = None,
                                  prune_norm: bool = False) -> list[int]:
        """Drop the modules the maps of `indices` (default: `out_indices`, else every stage) never use, as
        timm's: everything after the last of them (the Downsample after it included) and the final norm
        (also with `prune_norm`), so that every parameter left gets a gradient. The state dict is then a
        subset, which `load_state_dict(..., strict=False)` reads; save the unpruned model for a folder.

        Returns:
            The stages, from the start, that `indices` names.
        """
        stages = self.config.num_stages
        default = self.out_indices if self.out_indices is not None else stages
        take = take_indices(stages, default if indices is None else indices)
        if max(take) > self.last_built_stage:
            raise InputError(f"stages {tuple(take)} were pruned already: this backbone stops after stage "
                             f"{self.last_built_stage}.")
        if prune_norm or max(take) < stages - 1:
            self.layernorm = None
        if max(take) < stages - 1:
            keep = plan(self.config).stages[max(take)].position + 1
            self.encoder.intermediate_stages = self.encoder.intermediate_stages[:keep]
            self.encoder.last_stage = None
        self.last_built_stage = max(take)
        if self.out_indices is not None:
            self.out_indices = tuple(take)
        return take

    def forward_intermediates(self, pixel_values: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False, *, out_indices: Sequence[int] | None = None):
        """Dense feature maps of the requested stages for detection and segmentation heads, as timm's.

        Stage i gives (B, C_i, H / 2^(i+2), W / 2^(i+2)) (strides 4, 8, 16, 32, with ceil rounding); the
        last stage's map is its tokens laid back on the grid, before the final norm unless `norm=True`.

        Args:
            pixel_values: (B, num_channels, H, W) images.
            indices: an int n for the last n stages, or a sequence of stage numbers (negative from the
                end); all stages when None (a features-only backbone: its `out_indices`).
            norm: apply the final LayerNorm to the last stage's map (the others have no norm).
            stop_early: stop after the last requested stage; the returned final features are then that
                stage's map instead of the normalized tokens.
            output_fmt: "NCHW", the only layout (as timm's EfficientFormer).
            intermediates_only: return only the list of maps (the stages after the last requested one are
                then skipped, as the result is the same).
            out_indices: the earlier name of `indices`; it returns only the list of maps.

        Returns:
            `(final, maps)`: `final` is what `forward_features` returns ((B, N, C_last) normalized tokens)
            and `maps` the list, in stage order; only `maps` with `intermediates_only` or `out_indices`.
        """
        stages = self.config.num_stages
        take, intermediates_only, name = intermediates_request(stages, indices, out_indices, output_fmt,
                                                               intermediates_only, default=self.out_indices)
        built = self.last_built_stage
        if max(take) > built:
            raise InputError(f"{name} {tuple(take)} asks for stages this backbone does not have: it was pruned "
                             f"after stage {built} (prune_intermediate_layers).")
        if norm and self.layernorm is None:
            raise InputError("norm=True needs the final norm, which this backbone was pruned of "
                             "(prune_intermediate_layers); use an unpruned model for it.")
        stop = max(take) if stop_early or intermediates_only else built
        tokens, _, maps, grid, _ = self._run(pixel_values, keep_states=False, stop=stop)
        if tokens is not None:
            normed = self.layernorm(tokens) if self.layernorm is not None else tokens
            last = normed if norm else tokens
            maps = maps + [last.transpose(1, 2).reshape(last.shape[0], last.shape[2], *grid)]
        intermediates = [maps[i] for i in take]
        if intermediates_only:
            return intermediates
        return (normed if tokens is not None else maps[stop]), intermediates


__all__ = ["pool_tokens", "FeatureInfoMixin", "FeaturesOnlyBackbone"]
