"""EfficientFormer's layers on Keras 3 (`keras.layers` / `keras.ops`), mirroring
`efficientformer.models.pytorch.layers` name for name; the structure comes from
`efficientformer.models.architecture.plan`. The layers work channels-last, (B, H, W, C); the main layer
transposes the channels-first input. Weights are named as transformers' TF classes named them
(`efficientformer/encoder/intermediate_stages.0/...`, see `efficientformer.checkpoints.h5`).
Any input size of at least 32x32 works: the attention biases are resized from the trained R x R grid
as on the PyTorch side (`efficientformer.models.attention_bias`), and used as stored at that grid.
Nothing is cached on the layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import EfficientFormerConfig
from ...constants import ACTIVATIONS
from ...errors import ConfigError, InputError, require
from ..architecture import DownsamplePlan, StagePlan, plan
from ..attention_bias import ArrayOps, grid_bias

keras = require("keras", "tf", "the TensorFlow classes")
from keras import layers, ops  # noqa: E402

# one function per name of `constants.ACTIVATIONS` (exact GELU for "gelu", as transformers)
_ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
    "relu": ops.relu, "relu6": ops.relu6, "silu": ops.silu, "swish": ops.silu,
    "tanh": ops.tanh, "sigmoid": ops.sigmoid,
}
assert set(_ACTIVATIONS) == set(ACTIVATIONS), "every activation a config may name needs a Keras function"


def activation(name: str):
    """The function for `config.hidden_act`."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"hidden_act={name!r} is not supported; choose one of {', '.join(ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


_serializable = keras.saving.register_keras_serializable(package="efficientformer")


@_serializable
class HostTruncatedNormal(keras.initializers.Initializer):
    """Truncated normal (within 2 standard deviations) drawn with numpy on the host.

    Same values on every backend, and no per-shape compilation (Keras' random initializers compile one
    program per shape on JAX, which made building a model take tens of seconds). Seeds come from numpy's
    global generator, so `keras.utils.set_random_seed` makes it reproducible.
    """

    def __init__(self, stddev: float = 0.02) -> None:
        self.stddev = float(stddev)

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(np.random.randint(2 ** 31))
        values = rng.standard_normal(shape)
        outside = np.abs(values) > 2
        while outside.any():
            values[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(values) > 2
        return ops.convert_to_tensor(values * self.stddev, dtype=dtype or "float32")

    def get_config(self) -> dict:
        return {"stddev": self.stddev}


def _conv(config: EfficientFormerConfig, filters: int, kernel_size: int, name: str, strides: int = 1):
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="valid", name=name,
                         kernel_initializer=HostTruncatedNormal(config.initializer_range))


def _dense(config: EfficientFormerConfig, units: int, name: str):
    return layers.Dense(units, name=name, kernel_initializer=HostTruncatedNormal(config.initializer_range))


def _dropout(rate: float):
    """Dropout, or nothing when the rate is 0 (a Keras Dropout would still own a random generator)."""
    return layers.Dropout(rate, name="dropout") if rate > 0 else None


def _batchnorm(config: EfficientFormerConfig, name: str) -> layers.BatchNormalization:
    # momentum 0.9 in Keras == momentum 0.1 in PyTorch
    return layers.BatchNormalization(axis=-1, epsilon=config.batch_norm_eps, momentum=0.9, name=name)


class _Layer(layers.Layer):
    """Base of this module's layers: `named_weights()` walks attributes the way the names are built."""

    def named_weights(self, prefix: str = "") -> dict[str, Any]:
        """{transformers TF name: variable} of this layer and its sublayers, in creation order."""
        out: dict[str, Any] = {}
        for attr, value in vars(self).items():
            if attr.startswith("_"):
                continue
            items = [(f"{attr}.{i}", v) for i, v in enumerate(value)] if isinstance(value, (list, tuple)) \
                else [(attr, value)]
            for name, item in items:
                path = f"{prefix}{name}"
                if isinstance(item, keras.Variable):
                    out[path] = item
                elif isinstance(item, _Layer):
                    out.update(item.named_weights(path + "/"))
                elif isinstance(item, layers.Layer):
                    out.update({f"{path}/{v.name}": v for v in item.weights})
        return out


class DropPath(_Layer):
    """Stochastic depth: in training, drop the residual branch of whole samples with probability `rate`
    and rescale the kept ones by 1 / (1 - rate)."""

    def __init__(self, rate: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = float(rate)
        self._seed = keras.random.SeedGenerator(np.random.randint(2 ** 31)) if self.rate > 0 else None

    def call(self, x, training: bool = False):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self._seed, dtype=x.dtype))
        return x / keep * mask


class ConvStem(_Layer):
    """Two 3x3 stride-2 convolutions (explicit zero padding 1) with BatchNorm and ReLU:
    (B, H, W, C) -> (B, ceil(H/4), ceil(W/4), out_channels), channels-last."""

    def __init__(self, config: Any, out_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = config.num_channels, out_channels
        self.padding = layers.ZeroPadding2D(padding=1, name="padding")
        self.convolution1 = _conv(config, out_channels // 2, 3, "convolution1", strides=2)
        self.batchnorm_before = _batchnorm(config, "batchnorm_before")
        self.convolution2 = _conv(config, out_channels, 3, "convolution2", strides=2)
        self.batchnorm_after = _batchnorm(config, "batchnorm_after")
        self.activation = ops.relu  # EfficientFormerV2's stem: its configured activation

    def build(self, input_shape=None) -> None:
        mid = self.out_channels // 2
        self.convolution1.build((None, None, None, self.in_channels))
        self.batchnorm_before.build((None, None, None, mid))
        self.convolution2.build((None, None, None, mid))
        self.batchnorm_after.build((None, None, None, self.out_channels))

    def call(self, x, training: bool = False):
        x = self.activation(self.batchnorm_before(self.convolution1(self.padding(x)), training=training))
        return self.activation(self.batchnorm_after(self.convolution2(self.padding(x)), training=training))


class Downsample(_Layer):
    """Strided convolution (explicit zero padding, as PyTorch pads) + BatchNorm between stages:
    (B, H, W, Ci) -> (B, H/2, W/2, Ci+1) with the default 3x3 / stride 2 / pad 1."""

    def __init__(self, config: EfficientFormerConfig, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.padding = layers.ZeroPadding2D(padding=config.downsample_pad, name="padding")
        self.projection = _conv(config, out_channels, config.downsample_patch_size, "projection",
                                strides=config.downsample_stride)
        self.norm = _batchnorm(config, "norm")

    def build(self, input_shape=None) -> None:
        self.projection.build((None, None, None, self.in_channels))
        self.norm.build((None, None, None, self.out_channels))

    def call(self, x, training: bool = False):
        return self.norm(self.projection(self.padding(x)), training=training)


class Pooling(_Layer):
    """Token mixer of Meta4D blocks: average pooling (stride 1, padding not counted) minus the input."""

    def __init__(self, pool_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pool = layers.AveragePooling2D(pool_size=pool_size, strides=1, padding="same", name="pool")

    def call(self, x):
        return self.pool(x) - x


class ConvMlp(_Layer):
    """1x1 conv -> BN -> activation -> 1x1 conv -> BN on (B, H, W, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, int(dim * config.mlp_expansion_ratio)
        self.convolution1 = _conv(config, self.hidden, 1, "convolution1")
        self.batchnorm_before = _batchnorm(config, "batchnorm_before")
        self.activation = activation(config.hidden_act)
        self.convolution2 = _conv(config, dim, 1, "convolution2")
        self.batchnorm_after = _batchnorm(config, "batchnorm_after")
        self.dropout = _dropout(config.hidden_dropout_prob)

    def build(self, input_shape=None) -> None:
        self.convolution1.build((None, None, None, self.dim))
        self.batchnorm_before.build((None, None, None, self.hidden))
        self.convolution2.build((None, None, None, self.hidden))
        self.batchnorm_after.build((None, None, None, self.dim))

    def _drop(self, x, training):
        return x if self.dropout is None else self.dropout(x, training=training)

    def call(self, x, training: bool = False):
        x = self._drop(self.activation(self.batchnorm_before(self.convolution1(x), training=training)), training)
        return self._drop(self.batchnorm_after(self.convolution2(x), training=training), training)


class _ScaledResidual(_Layer):
    """Shared by Meta4D and Meta3D: the two layer scales (C,) and stochastic depth."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.use_layer_scale = dim, config.use_layer_scale
        self.init_value = float(config.layer_scale_init_value)
        self.drop_path = DropPath(drop_path, name="drop_path")

    def _build_scales(self) -> None:
        if self.use_layer_scale:
            init = keras.initializers.Constant(self.init_value)
            self.layer_scale_1 = self.add_weight(shape=(self.dim,), initializer=init, name="layer_scale_1")
            self.layer_scale_2 = self.add_weight(shape=(self.dim,), initializer=init, name="layer_scale_2")

    def _residual(self, x, branch, scale, training):
        if self.use_layer_scale:
            branch = branch * scale  # (C,) broadcasts over the last (channel) axis
        return x + self.drop_path(branch, training=training)


class Meta4D(_ScaledResidual):
    """x + s1 * Pooling(x), then x + s2 * ConvMlp(x), on (B, H, W, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float = 0.0, **kwargs) -> None:
        super().__init__(config, dim, drop_path, **kwargs)
        self.token_mixer = Pooling(config.pool_size, name="token_mixer")
        self.mlp = ConvMlp(config, dim, name="mlp")

    def build(self, input_shape=None) -> None:
        self._build_scales()
        self.mlp.build(None)

    def call(self, x, training: bool = False):
        x = self._residual(x, self.token_mixer(x), getattr(self, "layer_scale_1", None), training)
        return self._residual(x, self.mlp(x, training=training), getattr(self, "layer_scale_2", None), training)


class Meta4DBlocks(_Layer):
    """A run of Meta4D blocks of one width (`blocks.0`, `blocks.1`, ...)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.blocks = [Meta4D(config, dim, rate, name=f"blocks.{i}") for i, rate in enumerate(drop_paths)]

    def build(self, input_shape=None) -> None:
        for block in self.blocks:
            block.build(None)

    def call(self, x, training: bool = False):
        for block in self.blocks:
            x = block(x, training=training)
        return x


class IntermediateStage(_Layer):
    """One of stages 1..3: a run of Meta4D blocks, (B, Hi, Wi, Ci) -> same shape."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.meta4D_layers = Meta4DBlocks(config, dim, drop_paths, name="meta4D_layers")

    def build(self, input_shape=None) -> None:
        self.meta4D_layers.build(None)

    def call(self, x, training: bool = False):
        return self.meta4D_layers(x, training=training)


def _arange(n: int, like: Any, integer: bool) -> Any:
    return ops.arange(n, dtype="int32" if integer else keras.backend.standardize_dtype(like.dtype))


# `efficientformer.models.attention_bias`'s recipe in keras.ops, the same code the PyTorch model runs.
KERAS_OPS = ArrayOps(arange=_arange, abs=ops.abs, relu=ops.relu, matmul=ops.matmul, reshape=ops.reshape,
                     transpose=ops.transpose, take=lambda table, index: ops.take(table, index, axis=1))


class Attention(_Layer):
    """Multi-head self-attention with a learned bias per head and relative offset (|d_row|, |d_col|).

    Tokens (B, N, C) -> (B, N, C) and probabilities (B, heads, N, N). `attention_biases` (heads, R * R)
    is the table of the R x R training grid; for another grid (H, W) it is resized on every call as
    `A_h @ table @ A_w.T` and gathered by offset (`efficientformer.models.attention_bias.grid_bias`, the
    recipe the PyTorch model runs). At the trained grid the table is used as stored.
    """

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.key_dim = config.dim, config.num_attention_heads, config.key_dim
        self.value_dim = int(config.attention_ratio * config.key_dim)
        self.scale = config.key_dim ** -0.5
        self.resolution = config.resolution
        self.qkv = _dense(config, self.num_heads * (2 * self.key_dim + self.value_dim), "qkv")
        self.projection = _dense(config, self.dim, "projection")

    def build(self, input_shape=None) -> None:
        self.attention_biases = self.add_weight(shape=(self.num_heads, self.resolution ** 2), initializer="zeros",
                                                name="attention_biases")
        self.qkv.build((None, None, self.dim))
        self.projection.build((None, None, self.num_heads * self.value_dim))

    def bias(self, grid: tuple[int, int]):
        """(heads, N, N) additive attention bias for a token grid (H, W), N = H * W."""
        return grid_bias(ops.convert_to_tensor(self.attention_biases), self.resolution, grid, KERAS_OPS)

    def call(self, x, grid: tuple[int, int], training: bool = False):
        tokens = int(grid[0]) * int(grid[1])
        qkv = ops.reshape(self.qkv(x), (-1, tokens, self.num_heads, 2 * self.key_dim + self.value_dim))
        qkv = ops.transpose(qkv, (0, 2, 1, 3))  # (B, heads, N, per-head)
        query, key, value = ops.split(qkv, [self.key_dim, 2 * self.key_dim], axis=-1)
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) * self.scale
        if tokens == 1:  # one token attends to itself only (a softmax over one value)
            probs = ops.ones_like(scores)
        else:
            probs = ops.softmax(scores + self.bias(grid)[None], axis=-1)
        out = ops.transpose(ops.matmul(probs, value), (0, 2, 1, 3))
        out = ops.reshape(out, (-1, tokens, self.num_heads * self.value_dim))
        return self.projection(out), probs


class LinearMlp(_Layer):
    """Linear -> activation -> Linear on tokens (B, N, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, int(dim * config.mlp_expansion_ratio)
        self.linear_in = _dense(config, self.hidden, "linear_in")
        self.activation = activation(config.hidden_act)
        self.linear_out = _dense(config, dim, "linear_out")
        self.dropout = _dropout(config.hidden_dropout_prob)

    def build(self, input_shape=None) -> None:
        self.linear_in.build((None, None, self.dim))
        self.linear_out.build((None, None, self.hidden))

    def _drop(self, x, training):
        return x if self.dropout is None else self.dropout(x, training=training)

    def call(self, x, training: bool = False):
        x = self._drop(self.activation(self.linear_in(x)), training)
        return self._drop(self.linear_out(x), training)


class Meta3D(_ScaledResidual):
    """x + s1 * Attention(LN(x)), then x + s2 * LinearMlp(LN(x)), on tokens (B, N, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float = 0.0, **kwargs) -> None:
        super().__init__(config, dim, drop_path, **kwargs)
        self.layernorm1 = layers.LayerNormalization(epsilon=config.layer_norm_eps, name="layernorm1")
        self.token_mixer = Attention(config, name="token_mixer")
        self.layernorm2 = layers.LayerNormalization(epsilon=config.layer_norm_eps, name="layernorm2")
        self.mlp = LinearMlp(config, dim, name="mlp")

    def build(self, input_shape=None) -> None:
        self._build_scales()
        self.layernorm1.build((None, None, self.dim))
        self.token_mixer.build(None)
        self.layernorm2.build((None, None, self.dim))
        self.mlp.build(None)

    def call(self, x, grid: tuple[int, int], training: bool = False):
        mixed, probs = self.token_mixer(self.layernorm1(x), grid=grid, training=training)
        x = self._residual(x, mixed, getattr(self, "layer_scale_1", None), training)
        mlp = self.mlp(self.layernorm2(x), training=training)
        return self._residual(x, mlp, getattr(self, "layer_scale_2", None), training), probs


class Meta3DBlocks(_Layer):
    """A run of Meta3D blocks; returns the tokens and every block's attention probabilities."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.blocks = [Meta3D(config, dim, rate, name=f"blocks.{i}") for i, rate in enumerate(drop_paths)]

    def build(self, input_shape=None) -> None:
        for block in self.blocks:
            block.build(None)

    def call(self, x, grid: tuple[int, int], training: bool = False):
        attentions = []
        for block in self.blocks:
            x, probs = block(x, grid=grid, training=training)
            attentions.append(probs)
        return x, tuple(attentions)


class LastStage(_Layer):
    """Meta4D blocks on (B, H, W, C), flatten to tokens (B, H*W, C) row-major, then Meta3D blocks."""

    def __init__(self, config: EfficientFormerConfig, drop_paths, **kwargs) -> None:
        super().__init__(**kwargs)
        dim, n4d = config.hidden_sizes[-1], config.num_meta4d_last_stage
        self.meta4D_layers = Meta4DBlocks(config, dim, drop_paths[:n4d], name="meta4D_layers")
        self.meta3D_layers = Meta3DBlocks(config, dim, drop_paths[n4d:], name="meta3D_layers")

    def build(self, input_shape=None) -> None:
        self.meta4D_layers.build(None)
        self.meta3D_layers.build(None)

    def call(self, x, training: bool = False):
        x = self.meta4D_layers(x, training=training)
        grid = (x.shape[1], x.shape[2])
        if grid[0] is None or grid[1] is None:
            raise InputError("the image height and width must be known when the model is traced (the attention "
                             "bias depends on them); give a static spatial size, e.g. a TensorSpec of shape "
                             "(None, 3, 224, 224).")
        tokens = ops.reshape(x, (-1, grid[0] * grid[1], x.shape[3]))
        tokens, attentions = self.meta3D_layers(tokens, grid=grid, training=training)
        return tokens, attentions


def _rates(stage: StagePlan) -> list[float]:
    return [block.drop_path for block in stage.blocks]


class Encoder(_Layer):
    """`intermediate_stages`: stages 1..3 (Meta4D blocks), each followed by a Downsample where the plan puts
    one; then `last_stage`. The layout is `efficientformer.models.architecture.plan(config).layout`."""

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        network = plan(config)
        self.intermediate_stages = [
            Downsample(config, item.in_width, item.out_width, name=f"intermediate_stages.{item.position}")
            if isinstance(item, DownsamplePlan)
            else IntermediateStage(config, item.width, _rates(item), name=f"intermediate_stages.{item.position}")
            for item in network.layout]
        self.last_stage = LastStage(config, _rates(network.stages[-1]), name="last_stage")

    def build(self, input_shape=None) -> None:
        for stage in self.intermediate_stages:
            stage.build(None)
        self.last_stage.build(None)

    def call(self, x, output_hidden_states: bool = False, training: bool = False):
        states = [x]
        for stage in self.intermediate_stages:
            x = stage(x, training=training)
            states.append(x)
        tokens, attentions = self.last_stage(x, training=training)
        return tokens, (tuple(states) if output_hidden_states else None), attentions


class TFEfficientFormerMainLayer(_Layer):
    """The backbone under `efficientformer/`: ConvStem (`patch_embed`), Encoder, final LayerNorm.

    Takes channels-first pixels (B, C, H, W); returns (tokens (B, N, C_last) after the LayerNorm,
    hidden states or None, attentions).
    """

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.patch_embed = ConvStem(config, config.hidden_sizes[0], name="patch_embed")
        self.encoder = Encoder(config, name="encoder")
        self.layernorm = layers.LayerNormalization(epsilon=config.layer_norm_eps, name="layernorm")

    def build(self, input_shape=None) -> None:
        self.patch_embed.build(None)
        self.encoder.build(None)
        self.layernorm.build((None, None, self.config.hidden_sizes[-1]))

    def call(self, pixel_values, output_hidden_states: bool = False, training: bool = False):
        x = ops.transpose(pixel_values, (0, 2, 3, 1))  # NCHW -> NHWC
        x = self.patch_embed(x, training=training)
        tokens, states, attentions = self.encoder(x, output_hidden_states=output_hidden_states, training=training)
        if states is not None:  # maps back to channels-first; the last state is the tokens (B, N, C)
            states = tuple(ops.transpose(s, (0, 3, 1, 2)) for s in states) + (tokens,)
        return self.layernorm(tokens), states, attentions


__all__ = [
    "TFEfficientFormerMainLayer", "ConvStem", "Downsample", "Pooling", "ConvMlp", "Meta4D", "Meta4DBlocks",
    "IntermediateStage", "Attention", "LinearMlp", "Meta3D", "Meta3DBlocks", "LastStage", "Encoder", "DropPath",
    "HostTruncatedNormal", "activation",
]
