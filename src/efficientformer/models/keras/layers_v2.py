"""EfficientFormerV2's layers on Keras 3 (`keras.layers` / `keras.ops`), mirroring
`efficientformer.models.pytorch.layers_v2` name for name (weights `efficientformer/encoder/stages.0/...`, the
PyTorch names with `/`); the structure comes from `efficientformer.models.architecture_v2.plan_v2`.

The layers work channels-last, (B, H, W, C); the main layer transposes the channels-first input and gives
its outputs back channels-first. Depthwise convolutions are grouped `Conv2D`s, so their kernels are the
PyTorch ones transposed as every other kernel. The attention biases are resized from the trained grid as
on the PyTorch side (`efficientformer.models.attention_bias`), and used as stored at that grid.
"""

from __future__ import annotations

from ...config_v2 import EfficientFormerV2Config
from ...errors import InputError, require
from ..architecture_v2 import DOWNSAMPLE_CONV, STRIDE, AttentionPlanV2, BlockPlanV2, DownsamplePlanV2, plan_v2
from ..attention_bias import grid_bias
from .layers import KERAS_OPS, ConvStem, DropPath, HostTruncatedNormal, _batchnorm, _Layer, activation

keras = require("keras", "tf", "the TensorFlow classes")
from keras import layers, ops  # noqa: E402


def _conv(config: EfficientFormerV2Config, filters: int, kernel: int, name: str, strides: int = 1, groups: int = 1):
    return layers.Conv2D(filters, kernel, strides=strides, padding="valid", groups=groups, name=name,
                         kernel_initializer=HostTruncatedNormal(config.initializer_range))


def _static_grid(x) -> tuple[int, int]:
    grid = (x.shape[1], x.shape[2])
    if grid[0] is None or grid[1] is None:
        raise InputError("the image height and width must be known when the model is traced (the attention "
                         "bias depends on them); give a static spatial size, e.g. a TensorSpec of shape "
                         "(None, 3, 224, 224).")
    return int(grid[0]), int(grid[1])


class ConvNorm(_Layer):
    """Convolution (zero padding kernel // 2, as PyTorch pads) + BatchNorm, on (B, H, W, C)."""

    def __init__(self, config: EfficientFormerV2Config, in_channels: int, out_channels: int, kernel: int = 1,
                 stride: int = 1, groups: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.padding = layers.ZeroPadding2D(padding=kernel // 2, name="padding") if kernel > 1 else None
        self.convolution = _conv(config, out_channels, kernel, "convolution", strides=stride, groups=groups)
        self.batchnorm = _batchnorm(config, "batchnorm")

    def build(self, input_shape=None) -> None:
        self.convolution.build((None, None, None, self.in_channels))
        self.batchnorm.build((None, None, None, self.out_channels))

    def call(self, x, training: bool = False):
        if self.padding is not None:
            x = self.padding(x)
        return self.batchnorm(self.convolution(x), training=training)


class StemV2(ConvStem):
    """Two 3x3 stride-2 convolutions, each with BatchNorm and the activation: (B, H, W, 3) -> (B, H/4, W/4, C)."""

    def __init__(self, config: EfficientFormerV2Config, **kwargs) -> None:
        super().__init__(config, config.hidden_sizes[0], **kwargs)
        self.activation = activation(config.hidden_act)


class DepthwiseFFN(_Layer):
    """1x1 conv -> BN -> act -> 3x3 depthwise conv -> BN -> act -> 1x1 conv -> BN."""

    def __init__(self, config: EfficientFormerV2Config, dim: int, hidden: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, hidden
        self.convolution1 = _conv(config, hidden, 1, "convolution1")
        self.batchnorm_before = _batchnorm(config, "batchnorm_before")
        self.padding = layers.ZeroPadding2D(padding=1, name="padding")
        self.depthwise = _conv(config, hidden, 3, "depthwise", groups=hidden)
        self.batchnorm_depthwise = _batchnorm(config, "batchnorm_depthwise")
        self.convolution2 = _conv(config, dim, 1, "convolution2")
        self.batchnorm_after = _batchnorm(config, "batchnorm_after")
        self.activation = activation(config.hidden_act)
        rate = config.hidden_dropout_prob
        self.dropout = layers.Dropout(rate, name="dropout") if rate else None

    def build(self, input_shape=None) -> None:
        self.convolution1.build((None, None, None, self.dim))
        self.batchnorm_before.build((None, None, None, self.hidden))
        self.depthwise.build((None, None, None, self.hidden))
        self.batchnorm_depthwise.build((None, None, None, self.hidden))
        self.convolution2.build((None, None, None, self.hidden))
        self.batchnorm_after.build((None, None, None, self.dim))

    def _drop(self, x, training):
        return x if self.dropout is None else self.dropout(x, training=training)

    def call(self, x, training: bool = False):
        x = self.activation(self.batchnorm_before(self.convolution1(x), training=training))
        x = self.activation(self.batchnorm_depthwise(self.depthwise(self.padding(x)), training=training))
        return self._drop(self.batchnorm_after(self.convolution2(self._drop(x, training)), training=training), training)


class _BiasTable(_Layer):
    """The learned bias per head and offset of the trained grid, and its bias for the grid met."""

    def __init__(self, plan: AttentionPlanV2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.num_heads, self.key_dim, self.value_dim = plan.heads, plan.key_dim, plan.value_dim
        self.scale = plan.key_dim ** -0.5

    def _build_table(self) -> None:
        self.attention_biases = self.add_weight(shape=self.plan.table_shape, initializer="zeros",
                                                name="attention_biases")

    def bias(self, grid: tuple[int, int]):
        """(heads, Nq, N) additive bias for a key grid (H, W)."""
        return grid_bias(ops.convert_to_tensor(self.attention_biases), self.plan.grid, grid, KERAS_OPS,
                         self.plan.query_stride)

    def heads(self, x, per_head: int):
        """(B, H, W, heads * per_head) -> (B, heads, H * W, per_head)."""
        tokens = x.shape[1] * x.shape[2]
        return ops.transpose(ops.reshape(x, (-1, tokens, self.num_heads, per_head)), (0, 2, 1, 3))

    def scores(self, x, grid: tuple[int, int], training: bool = False):
        """Scaled query-key scores plus the bias of the key `grid` (B, heads, Nq, N), the values and their
        local (depthwise) branch: the part both attentions share."""
        query = self.heads(self.query(x, training=training), self.key_dim)
        key = self.heads(self.key(x, training=training), self.key_dim)
        value = self.value(x, training=training)
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) * self.scale + self.bias(grid)[None]
        return scores, value, self.value_local(value, training=training)

    def merge(self, weights, value, local):
        """(weights @ value) of every head laid back on the map of `local`, plus `local`."""
        out = ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3))  # (B, Nq, heads, d)
        return ops.reshape(out, (-1, local.shape[1], local.shape[2], self.num_heads * self.value_dim)) + local


class Attention4D(_BiasTable):
    """Multi-head attention on a (B, H, W, C) map with talking heads and a local value branch; in stage 3 on
    the map downsampled by a stride-2 depthwise conv, upsampled (bilinear) back. Returns the map and the
    attention weights (B, heads, N, N) after the second talking head."""

    def __init__(self, config: EfficientFormerV2Config, plan: AttentionPlanV2, **kwargs) -> None:
        super().__init__(plan, **kwargs)
        dim, keys, values = plan.in_width, plan.heads * plan.key_dim, plan.heads * plan.value_dim
        self.stride_conv = (ConvNorm(config, dim, dim, 3, stride=2, groups=dim, name="stride_conv")
                            if plan.kind == STRIDE else None)
        self.query = ConvNorm(config, dim, keys, name="query")
        self.key = ConvNorm(config, dim, keys, name="key")
        self.value = ConvNorm(config, dim, values, name="value")
        self.value_local = ConvNorm(config, values, values, 3, groups=values, name="value_local")
        self.talking_head1 = _conv(config, plan.heads, 1, "talking_head1")
        self.talking_head2 = _conv(config, plan.heads, 1, "talking_head2")
        self.activation = activation(config.hidden_act)
        self.projection = ConvNorm(config, values, plan.out_width, name="projection")

    def build(self, input_shape=None) -> None:
        self._build_table()
        for part in (self.stride_conv, self.query, self.key, self.value, self.value_local, self.projection):
            if part is not None:
                part.build(None)
        self.talking_head1.build((None, None, None, self.num_heads))
        self.talking_head2.build((None, None, None, self.num_heads))

    def _talk(self, head, scores):
        """A 1x1 conv across the heads of (B, heads, Nq, N) scores."""
        return ops.transpose(head(ops.transpose(scores, (0, 2, 3, 1))), (0, 3, 1, 2))

    def call(self, x, training: bool = False):
        size = _static_grid(x)
        if self.stride_conv is not None:
            x = self.stride_conv(x, training=training)
        scores, value, local = self.scores(x, _static_grid(x), training)
        weights = self._talk(self.talking_head2, ops.softmax(self._talk(self.talking_head1, scores), axis=-1))
        out = self.merge(weights, self.heads(value, self.value_dim), local)
        if self.stride_conv is not None:
            out = ops.image.resize(out, size, interpolation="bilinear", antialias=False)
        return self.projection(self.activation(out), training=training), weights


class LocalGlobalQuery(_Layer):
    """Queries of the downsampling attention: a stride-2 depthwise conv plus stride-2 sampling, then 1x1 conv + BN."""

    def __init__(self, config: EfficientFormerV2Config, dim: int, out: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.padding = layers.ZeroPadding2D(padding=1, name="padding")
        self.local = _conv(config, dim, 3, "local", strides=2, groups=dim)
        self.projection = ConvNorm(config, dim, out, name="projection")

    def build(self, input_shape=None) -> None:
        self.local.build((None, None, None, self.dim))
        self.projection.build(None)

    def call(self, x, training: bool = False):
        return self.projection(self.local(self.padding(x)) + x[:, ::2, ::2, :], training=training)


class Attention4DDownsample(_BiasTable):
    """Local-global attention into stage 4: queries on the stride-2 grid, keys and values on the full map."""

    def __init__(self, config: EfficientFormerV2Config, plan: AttentionPlanV2, **kwargs) -> None:
        super().__init__(plan, **kwargs)
        dim, keys, values = plan.in_width, plan.heads * plan.key_dim, plan.heads * plan.value_dim
        self.query = LocalGlobalQuery(config, dim, keys, name="query")
        self.key = ConvNorm(config, dim, keys, name="key")
        self.value = ConvNorm(config, dim, values, name="value")
        self.value_local = ConvNorm(config, values, values, 3, stride=2, groups=values, name="value_local")
        self.activation = activation(config.hidden_act)
        self.projection = ConvNorm(config, values, plan.out_width, name="projection")

    def build(self, input_shape=None) -> None:
        self._build_table()
        for part in (self.query, self.key, self.value, self.value_local, self.projection):
            part.build(None)

    def call(self, x, training: bool = False):
        scores, value, local = self.scores(x, _static_grid(x), training)
        weights = ops.softmax(scores, axis=-1)
        out = self.merge(weights, self.heads(value, self.value_dim), local)
        return self.projection(self.activation(out), training=training), weights


class DownsampleV2(_Layer):
    """Stride-2 conv + BN between stages; into the last stage the attention downsample is added to it."""

    def __init__(self, config: EfficientFormerV2Config, plan: DownsamplePlanV2, **kwargs) -> None:
        super().__init__(**kwargs)
        kernel, stride, pad = DOWNSAMPLE_CONV
        self.in_channels, self.out_channels = plan.in_width, plan.out_width
        self.padding = layers.ZeroPadding2D(padding=pad, name="padding")
        self.projection = _conv(config, plan.out_width, kernel, "projection", strides=stride)
        self.norm = _batchnorm(config, "norm")
        self.attention = (Attention4DDownsample(config, plan.attention, name="attention")
                          if plan.attention is not None else None)

    def build(self, input_shape=None) -> None:
        self.projection.build((None, None, None, self.in_channels))
        self.norm.build((None, None, None, self.out_channels))
        if self.attention is not None:
            self.attention.build(None)

    def call(self, x, training: bool = False):
        out = self.norm(self.projection(self.padding(x)), training=training)
        if self.attention is None:
            return out, None
        mixed, weights = self.attention(x, training=training)
        return mixed + out, weights


class BlockV2(_Layer):
    """`x + s1 * Attention4D(x)` (attention blocks only), then `x + s2 * DepthwiseFFN(x)`, with stochastic depth."""

    def __init__(self, config: EfficientFormerV2Config, plan: BlockPlanV2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.use_layer_scale = plan.width, config.use_layer_scale
        self.init_value = float(config.layer_scale_init_value)
        self.has_attention = plan.attention is not None
        self.token_mixer = Attention4D(config, plan.attention, name="token_mixer") if self.has_attention else None
        self.mlp = DepthwiseFFN(config, plan.width, plan.hidden, name="mlp")
        self.drop_path = DropPath(plan.drop_path, name="drop_path")

    def build(self, input_shape=None) -> None:
        init = keras.initializers.Constant(self.init_value)
        if self.use_layer_scale and self.has_attention:
            self.layer_scale_1 = self.add_weight(shape=(self.dim,), initializer=init, name="layer_scale_1")
        if self.use_layer_scale:
            self.layer_scale_2 = self.add_weight(shape=(self.dim,), initializer=init, name="layer_scale_2")
        if self.token_mixer is not None:
            self.token_mixer.build(None)
        self.mlp.build(None)

    def _residual(self, x, branch, scale, training):
        if scale is not None:
            branch = branch * scale  # (C,) broadcasts over the channel axis
        return x + self.drop_path(branch, training=training)

    def call(self, x, training: bool = False):
        weights = None
        if self.token_mixer is not None:
            mixed, weights = self.token_mixer(x, training=training)
            x = self._residual(x, mixed, getattr(self, "layer_scale_1", None), training)
        x = self._residual(x, self.mlp(x, training=training), getattr(self, "layer_scale_2", None), training)
        return x, weights


class StageV2(_Layer):
    """The downsample a stage starts with (none for the first) and its blocks."""

    def __init__(self, config: EfficientFormerV2Config, downsample, blocks, **kwargs) -> None:
        super().__init__(**kwargs)
        self.downsample = DownsampleV2(config, downsample, name="downsample") if downsample is not None else None
        self.blocks = [BlockV2(config, block, name=f"blocks.{block.index}") for block in blocks]

    def build(self, input_shape=None) -> None:
        if self.downsample is not None:
            self.downsample.build(None)
        for block in self.blocks:
            block.build(None)

    def call(self, x, training: bool = False):
        weights = []
        if self.downsample is not None:
            x, found = self.downsample(x, training=training)
            weights.append(found)
        for block in self.blocks:
            x, found = block(x, training=training)
            weights.append(found)
        return x, tuple(w for w in weights if w is not None)


class EncoderV2(_Layer):
    """`stages`: the four stages of the plan."""

    def __init__(self, config: EfficientFormerV2Config, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stages = [StageV2(config, stage.downsample, stage.blocks, name=f"stages.{stage.index}")
                       for stage in plan_v2(config).stages]

    def build(self, input_shape=None) -> None:
        for stage in self.stages:
            stage.build(None)


class TFEfficientFormerV2MainLayer(_Layer):
    """The backbone under `efficientformer/`: StemV2 (`patch_embed`), EncoderV2, final BatchNorm (`norm`).

    Takes channels-first pixels (B, C, H, W); returns (the normalized last map (B, C_last, h, w), the stem
    and stage maps channels-first or None, the attention weights). `run` gives the stage maps up to a stage.
    """

    def __init__(self, config: EfficientFormerV2Config, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.patch_embed = StemV2(config, name="patch_embed")
        self.encoder = EncoderV2(config, name="encoder")
        self.norm = _batchnorm(config, "norm")

    def build(self, input_shape=None) -> None:
        self.patch_embed.build(None)
        self.encoder.build(None)
        self.norm.build((None, None, None, self.config.hidden_sizes[-1]))

    def run(self, pixel_values, stop: int | None = None, training: bool = False):
        """(stem map, stage maps, attention weights), all channels-last, up to stage `stop` (default: all)."""
        x = self.patch_embed(ops.transpose(pixel_values, (0, 2, 3, 1)), training=training)
        stem, maps, weights = x, [], []
        last = len(self.encoder.stages) - 1 if stop is None else stop
        for stage in self.encoder.stages[:last + 1]:
            x, found = stage(x, training=training)
            maps.append(x)
            weights.extend(found)
        return stem, maps, tuple(weights)

    def call(self, pixel_values, output_hidden_states: bool = False, training: bool = False):
        stem, maps, weights = self.run(pixel_values, training=training)
        final = ops.transpose(self.norm(maps[-1], training=training), (0, 3, 1, 2))
        states = tuple(ops.transpose(m, (0, 3, 1, 2)) for m in (stem, *maps)) if output_hidden_states else None
        return final, states, weights


__all__ = ["TFEfficientFormerV2MainLayer", "ConvNorm", "StemV2", "DepthwiseFFN", "Attention4D", "LocalGlobalQuery",
           "Attention4DDownsample", "DownsampleV2", "BlockV2", "StageV2", "EncoderV2"]
