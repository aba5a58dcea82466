"""timm's feature API of the Keras classes, as the PyTorch classes have it: `feature_info`,
`forward_features`, `forward_intermediates` (dense NCHW stage maps) and the token pooling of `forward_head`."""

from __future__ import annotations

from ...errors import InputError, require
from ..architecture import StagePlan, plan
from ..outputs import FeatureInfo, intermediates_request, stage_feature_info
from .inputs import check_finite, check_pixel_values

keras = require("keras", "tf", "the TensorFlow classes")
from keras import ops  # noqa: E402


def pool_tokens(tokens, width: int):
    """(B, N, C) tokens -> (B, C) mean, the pooling before the heads."""
    shape = tuple(getattr(tokens, "shape", ()))
    if len(shape) != 3 or shape[-1] != width:
        raise InputError(f"forward_head takes the (batch, tokens, {width}) output of forward_features, got {shape}.")
    return ops.mean(tokens, axis=1)


class FeaturesMixin:
    """The forward surface of `TFEfficientFormerPreTrainedModel` besides `call`."""

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction (stride) and layer path of each stage's map in `forward_intermediates`, as
        timm's `feature_info` and the PyTorch classes' (with Keras' `/` paths)."""
        return stage_feature_info(self.config, self.base_model_prefix + "/", "/", getattr(self, "out_indices", None))

    def forward_features(self, pixel_values, training: bool = False):
        """(B, C, H, W) images -> (B, N, C_last) tokens after the final LayerNorm."""
        check_finite(pixel_values)
        return self._backbone(pixel_values, False, training)[0]

    def forward_intermediates(self, pixel_values, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False, *, out_indices=None,
                              training: bool = False):
        """Dense NCHW maps of the requested stages, as timm's and the PyTorch classes' `forward_intermediates`.

        `indices`: an int n for the last n stages or stage numbers (all when None); `norm`: the final
        LayerNorm on the last stage's map; `stop_early`: stop after the last requested stage (the final
        features are then its map); `intermediates_only`: return the list of maps alone (the earlier
        `out_indices` keyword always does). Returns `(final, maps)`, `final` being the normalized tokens
        (B, N, C_last) that `forward_head` takes.
        """
        stages = self.config.num_stages
        pixel_values, take, intermediates_only, stop = self._intermediates_request(
            pixel_values, indices, out_indices, output_fmt, intermediates_only, stop_early)
        main = self.efficientformer
        x = main.patch_embed(ops.transpose(ops.cast(pixel_values, self.compute_dtype), (0, 2, 3, 1)), training=training)
        maps = []
        for item, layer in zip(plan(self.config).layout, main.encoder.intermediate_stages):
            if len(maps) > stop:  # the Downsample after the last needed stage
                break
            x = layer(x, training=training)
            if isinstance(item, StagePlan):
                maps.append(x)
        final = x
        if stop == stages - 1:
            tokens, _ = main.encoder.last_stage(x, training=training)
            final = main.layernorm(tokens)
            last = final if norm else tokens
            maps.append(ops.reshape(last, (-1, x.shape[1], x.shape[2], last.shape[-1])))  # row-major tokens
        maps = [ops.transpose(m, (0, 3, 1, 2)) for m in maps]  # NHWC inside, NCHW out
        picked = [maps[i] for i in take]
        if intermediates_only:
            return picked
        return (final if stop == stages - 1 else maps[stop]), picked

    def _intermediates_request(self, pixel_values, indices, out_indices, output_fmt: str, intermediates_only: bool,
                               stop_early: bool):
        """`forward_intermediates`' arguments checked (both families): (pixel values, stages to return, whether
        only the maps are returned, the last stage to run)."""
        take, intermediates_only, _ = intermediates_request(self.config.num_stages, indices, out_indices, output_fmt,
                                                            intermediates_only)
        if isinstance(pixel_values, dict):
            pixel_values = pixel_values["pixel_values"]
        check_pixel_values(pixel_values, self.config.num_channels)
        check_finite(pixel_values)
        stop = max(take) if stop_early or intermediates_only else self.config.num_stages - 1
        return pixel_values, take, intermediates_only, stop

    def forward_head(self, x, pre_logits: bool = False):
        """(B, N, C_last) tokens of `forward_features` -> (B, C_last) mean over tokens (the backbone has
        no head); the classifier classes return their logits."""
        return pool_tokens(x, self.config.hidden_sizes[-1])


__all__ = ["pool_tokens", "FeaturesMixin"]
