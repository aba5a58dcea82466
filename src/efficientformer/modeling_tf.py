"""EfficientFormer on Keras 3: the TF classes transformers 4.x had, written with `keras.layers`/`keras.ops`.

They run on the TensorFlow backend (the default) and on JAX (`KERAS_BACKEND=jax`). Images go in
channels-first, (B, C, H, W) float, as the image processor returns them; the layers work channels-last
inside (the stem transposes) and the hidden states come back channels-first, as transformers did.

Layers and attributes mirror the PyTorch classes (`modeling_torch.py`) name for name, so weights are
named as transformers' TF classes named them (`efficientformer/encoder/intermediate_stages.0/...`),
see `efficientformer.tf_weights`. Any input size of at least 32x32 works: the attention biases are
resized from the trained R x R grid exactly as on the PyTorch side, and at the trained grid they are
used as stored. Nothing is cached on the layers.

Example:
    >>> from efficientformer import TFEfficientFormerForImageClassificationWithTeacher
    >>> model = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(  # doctest: +SKIP
    ...     "snap-research/efficientformer-l1-300")
    >>> model(pixel_values).logits.shape                                             # doctest: +SKIP
    (1, 1000)
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np

from . import tf_weights
from .attention_bias import bias_index, interpolation_matrix
from .config import EfficientFormerConfig
from .errors import CheckpointError, ConfigError, InputError, require
from .outputs import (BaseModelOutput, FeatureInfo, ImageClassifierOutput, ImageClassifierWithTeacherOutput,
                      ModelOutput, intermediates_request)

keras = require("keras", "tf", "the TensorFlow classes")
from keras import layers, ops  # noqa: E402

logger = logging.getLogger("efficientformer")

MIN_IMAGE_SIZE = 32  # one token after the 32x reduction
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")




def _activation(name: str):
    """The function for `config.hidden_act` (exact GELU for "gelu", as transformers)."""
    table = {
        "gelu": lambda x: ops.gelu(x, approximate=False),
        "gelu_new": lambda x: ops.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
        "relu": ops.relu, "relu6": ops.relu6, "silu": ops.silu, "swish": ops.silu,
        "tanh": ops.tanh, "sigmoid": ops.sigmoid,
    }
    if name not in table:
        raise ConfigError(f"hidden_act={name!r} is not supported; choose one of {', '.join(table)}.")
    return table[name]


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

    def __init__(self, config: EfficientFormerConfig, out_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = config.num_channels, out_channels
        self.padding = layers.ZeroPadding2D(padding=1, name="padding")
        self.convolution1 = _conv(config, out_channels // 2, 3, "convolution1", strides=2)
        self.batchnorm_before = _batchnorm(config, "batchnorm_before")
        self.convolution2 = _conv(config, out_channels, 3, "convolution2", strides=2)
        self.batchnorm_after = _batchnorm(config, "batchnorm_after")

    def build(self, input_shape=None) -> None:
        mid = self.out_channels // 2
        self.convolution1.build((None, None, None, self.in_channels))
        self.batchnorm_before.build((None, None, None, mid))
        self.convolution2.build((None, None, None, mid))
        self.batchnorm_after.build((None, None, None, self.out_channels))

    def call(self, x, training: bool = False):
        x = ops.relu(self.batchnorm_before(self.convolution1(self.padding(x)), training=training))
        return ops.relu(self.batchnorm_after(self.convolution2(self.padding(x)), training=training))


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
        self.activation = _activation(config.hidden_act)
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


class Attention(_Layer):
    """Multi-head self-attention with a learned bias per head and relative offset (|d_row|, |d_col|).

    Tokens (B, N, C) -> (B, N, C) and probabilities (B, heads, N, N). `attention_biases` (heads, R * R)
    is the table of the R x R training grid; for another grid (H, W) it is resized on every call as
    `A_h @ table @ A_w.T` (`efficientformer.attention_bias.interpolation_matrix`) and gathered with
    `bias_index(H, W)`. At the trained grid the table is used as stored.
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
        grid_h, grid_w = int(grid[0]), int(grid[1])
        table = ops.convert_to_tensor(self.attention_biases)
        if (grid_h, grid_w) != (self.resolution, self.resolution):
            r = self.resolution
            a_h = ops.convert_to_tensor(interpolation_matrix(grid_h, r), dtype=table.dtype)
            a_w_t = ops.convert_to_tensor(np.ascontiguousarray(interpolation_matrix(grid_w, r).T), dtype=table.dtype)
            resized = ops.matmul(ops.matmul(a_h[None], ops.reshape(table, (self.num_heads, r, r))), a_w_t[None])
            table = ops.reshape(resized, (self.num_heads, grid_h * grid_w))
        index = ops.convert_to_tensor(bias_index(grid_h, grid_w).astype("int32"))
        return ops.take(table, index, axis=1)

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
        self.activation = _activation(config.hidden_act)
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


class Encoder(_Layer):
    """Stages 1..3 (each Meta4D blocks, then a Downsample when the width or `downsamples` asks) and the
    last stage; `intermediate_stages` alternates IntermediateStage and Downsample as transformers."""

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        rates = config.block_drop_path_rates()
        starts = [sum(config.depths[:i]) for i in range(config.num_stages)]
        stages: list[_Layer] = []
        for i in range(config.num_stages - 1):
            stages.append(IntermediateStage(config, config.hidden_sizes[i], rates[starts[i]:starts[i + 1]],
                                            name=f"intermediate_stages.{len(stages)}"))
            if config.downsamples[i] or config.hidden_sizes[i] != config.hidden_sizes[i + 1]:
                stages.append(Downsample(config, config.hidden_sizes[i], config.hidden_sizes[i + 1],
                                         name=f"intermediate_stages.{len(stages)}"))
        self.intermediate_stages = stages
        self.last_stage = LastStage(config, rates[starts[-1]:], name="last_stage")

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


# ------------------------------------------------------------------------------------ input checks
def check_pixel_values(pixel_values, num_channels: int):
    """Raise InputError unless `pixel_values` is a float (B, num_channels, H, W) batch with H, W >= 32.

    Only static shapes and dtypes are read, so the check costs nothing under tracing.
    """
    if isinstance(pixel_values, (list, tuple)):
        pixel_values = np.asarray(pixel_values)
    if not hasattr(pixel_values, "shape") or not hasattr(pixel_values, "dtype"):
        raise InputError(f"pixel_values must be an array or tensor, got {type(pixel_values).__name__}; use "
                         "EfficientFormerImageProcessor(..., return_tensors='np') or 'tf'.")
    shape = tuple(pixel_values.shape)
    if len(shape) != 4:
        hint = " add a batch axis, e.g. pixel_values[None]," if len(shape) == 3 else ""
        raise InputError(f"pixel_values must be 4-D (batch, channels, height, width), got shape {shape};{hint} "
                         "or use the image processor.")
    dtype = keras.backend.standardize_dtype(pixel_values.dtype)
    if "float" not in dtype:
        raise InputError(f"pixel_values must be floating point, got {dtype}; rescale and normalize the images "
                         "(the image processor does it) or cast them to float32.")
    if shape[0] == 0:
        raise InputError("pixel_values holds no images (batch size 0); pass at least one image, "
                         "or skip the call for an empty batch.")
    channels, height, width = shape[1:]
    if channels is not None and channels != num_channels:
        hint = (" They look channels-last: transpose (B, H, W, C) to (B, C, H, W)."
                if shape[3] == num_channels else " Pass channels-first images (B, C, H, W).")
        raise InputError(f"pixel_values has {channels} channel(s) on axis 1 but the model takes {num_channels}.{hint}")
    if (height is not None and height < MIN_IMAGE_SIZE) or (width is not None and width < MIN_IMAGE_SIZE):
        raise InputError(f"images of {height}x{width} are too small: the model needs at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels; resize them first.")


def check_finite(pixel_values) -> None:
    """Raise InputError for NaN or inf pixels, which would come out as NaN scores without a word. Only
    concrete (eager) values are read, so traced graphs (fit, predict, export) stay free of the check."""
    values = _concrete_values(pixel_values)
    # one float64 sum is the fast path (no overflow even for float16); only a non-finite sum tests each value
    if values is not None and values.dtype.kind == "f" and not np.isfinite(values.sum(dtype=np.float64)) \
            and not np.isfinite(values).all():
        raise InputError("pixel_values holds NaN or infinite values; check how the images were decoded "
                         "and normalized (the image processor gives finite values).")


def _concrete_values(x) -> np.ndarray | None:
    """The values of an array or eager tensor; None for symbolic and traced tensors."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    except Exception:  # graph tensors, JAX tracers, Keras symbolic tensors
        return None


def _problem_type(config: EfficientFormerConfig, labels) -> str:
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if "int" in keras.backend.standardize_dtype(labels.dtype):
        return "single_label_classification"
    return "multi_label_classification"


def check_labels(config: EfficientFormerConfig, labels, batch: int | None = None):
    """Validate labels against the heads (`config.num_labels`) and the batch; return (problem type, labels).

    Integer labels (B,) or (B, 1) -> "single_label_classification"; one label or
    `problem_type="regression"` -> "regression", (B,) or (B, num_labels); float (B, num_labels) ->
    "multi_label_classification". `config.problem_type` overrides the choice from the dtype.

    Raises:
        InputError: wrong shape or batch size, or (when the values are concrete) class indices out of range.
    """
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    problem = _problem_type(config, labels)
    num_labels, shape = config.num_labels, tuple(labels.shape)
    if shape and batch is not None and shape[0] is not None and shape[0] != batch:
        raise InputError(f"labels hold {shape[0]} entries for a batch of {batch} images; give one label per image.")
    if problem == "single_label_classification":
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InputError(f"class labels must have shape (batch,), got {shape}; for multi-label targets pass "
                             "floats of shape (batch, num_labels).")
        values = _concrete_values(labels)
        if values is not None:
            if values.size and (values.min() < 0 or values.max() >= num_labels):
                raise InputError(f"class labels must lie in 0..{num_labels - 1}, got values from {values.min()} "
                                 f"to {values.max()}; check the label mapping or num_labels.")
    elif not (len(shape) == 2 and shape[1] == num_labels) and not (problem == "regression" and num_labels == 1
                                                                  and len(shape) == 1):
        raise InputError(f"labels for {problem} must have shape (batch, {num_labels}), got {shape}.")
    return problem, labels


def per_sample_loss(config: EfficientFormerConfig, labels, logits):
    """Loss of each sample (B,), as transformers' TF classes returned it; its mean is the PyTorch loss.

    Integer labels -> softmax cross-entropy; regression -> squared error (mean over labels); float
    multi-hot labels -> binary cross-entropy with logits (mean over labels). See `check_labels`.

    Raises:
        InputError: labels that do not fit (see `check_labels`).
    """
    problem, labels = check_labels(config, labels, logits.shape[0])
    labels = ops.convert_to_tensor(labels)
    if problem == "single_label_classification":
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    labels = ops.reshape(ops.cast(labels, logits.dtype), (-1, config.num_labels))
    if problem == "regression":
        return ops.mean(ops.square(logits - labels), axis=-1)
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True), axis=-1)


# ------------------------------------------------------------------------------------------ models
class TFEfficientFormerPreTrainedModel(keras.Model):
    """Base of the three models: configuration, loading and saving, export, and Keras integration.

    `model.fit` works without a compiled loss (the model's own loss from the labels, as transformers did)
    or with one (applied to `logits`); `model.predict` returns the output class holding numpy arrays
    (`model.predict(x).logits`). Weights are all created by the constructor.
    """

    config_class = EfficientFormerConfig
    base_model_prefix = "efficientformer"
    main_input_name = "pixel_values"
    keras_name = "tf_efficient_former_model"

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        if not isinstance(config, EfficientFormerConfig):
            raise ConfigError(f"config must be an EfficientFormerConfig, got {type(config).__name__}; "
                              f"use {type(self).__name__}.from_pretrained(...) to load a checkpoint.")
        config.validate()
        kwargs.setdefault("name", self.keras_name)
        super().__init__(**kwargs)
        self.config = config
        # preprocessing settings of the checkpoint (a dict or an EfficientFormerImageProcessor), set by
        # from_pretrained and written back by save_pretrained
        self.image_processor = None

    # -- structure
    def _heads(self) -> list[str]:
        return []

    def build(self, input_shape=None) -> None:
        """Create every weight (shapes come from the config, not from an input); done by the constructor."""
        if self.built:
            return
        self.efficientformer.build(None)
        for head in self._heads():
            getattr(self, head).build((None, self.config.hidden_sizes[-1]))

    def named_weights(self) -> dict[str, Any]:
        """{name: keras.Variable} with the names transformers' TF classes gave their weights
        (without model name and `:0`), e.g. `efficientformer/patch_embed/convolution1/kernel`."""
        out = self.efficientformer.named_weights("efficientformer/")
        for head in self._heads():
            out.update({f"{head}/{v.name}": v for v in getattr(self, head).weights})
        return out

    def _new_head(self, name: str):
        if self.config.num_labels == 0:
            return layers.Identity(name=name)
        return _dense(self.config, self.config.num_labels, name)

    def _backbone(self, pixel_values, output_hidden_states, training):
        if isinstance(pixel_values, dict):
            pixel_values = pixel_values["pixel_values"]
        check_pixel_values(pixel_values, self.config.num_channels)
        pixel_values = ops.cast(pixel_values, self.compute_dtype)
        return self.efficientformer(pixel_values, output_hidden_states=bool(output_hidden_states), training=training)

    def get_config(self) -> dict:
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        return cls(EfficientFormerConfig.from_dict(config["config"]), name=config.get("name"))

    def __call__(self, *args, **kwargs):
        # Validate before Keras runs the layers, so that errors are plain and nothing is computed.
        pixel_values = args[0] if args else kwargs.get("pixel_values")
        labels = kwargs.get("labels", args[1] if len(args) > 1 and self._heads() else None)
        if isinstance(pixel_values, dict):
            labels = pixel_values.get("labels", labels)
            pixel_values = pixel_values.get("pixel_values")
        if pixel_values is None:
            raise InputError(f"{type(self).__name__} needs pixel_values (batch, channels, height, width).")
        check_pixel_values(pixel_values, self.config.num_channels)
        if labels is not None and self._heads():
            check_labels(self.config, labels, tuple(pixel_values.shape)[0])
        check_finite(pixel_values)
        return super().__call__(*args, **kwargs)

    # -- timm's forward surface, as the PyTorch classes have it
    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction (stride) and layer path of each stage's map in `forward_intermediates`, as
        timm's `feature_info` and the PyTorch classes' (with Keras' `/` paths)."""
        reduction, info, stage = 4, [], 0  # the stem's two stride-2 convolutions
        for layer in self.efficientformer.encoder.intermediate_stages:
            if isinstance(layer, IntermediateStage):
                info.append({"num_chs": self.config.hidden_sizes[stage], "reduction": reduction,
                             "module": f"efficientformer/encoder/{layer.name}"})
                stage += 1
            else:
                reduction *= self.config.downsample_stride
        info.append({"num_chs": self.config.hidden_sizes[-1], "reduction": reduction,
                     "module": "efficientformer/encoder/last_stage"})
        return FeatureInfo(info)

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
        take, intermediates_only, _ = intermediates_request(stages, indices, out_indices, output_fmt,
                                                            intermediates_only)
        if isinstance(pixel_values, dict):
            pixel_values = pixel_values["pixel_values"]
        check_pixel_values(pixel_values, self.config.num_channels)
        check_finite(pixel_values)
        main = self.efficientformer
        stop = max(take) if stop_early or intermediates_only else stages - 1
        x = main.patch_embed(ops.transpose(ops.cast(pixel_values, self.compute_dtype), (0, 2, 3, 1)), training=training)
        maps = []
        for layer in main.encoder.intermediate_stages:
            if len(maps) > stop:  # the Downsample after the last needed stage
                break
            x = layer(x, training=training)
            if isinstance(layer, IntermediateStage):
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

    def forward_head(self, x, pre_logits: bool = False):
        """(B, N, C_last) tokens of `forward_features` -> (B, C_last) mean over tokens (the backbone has
        no head); the classifier classes return their logits."""
        return _pool(x, self.config.hidden_sizes[-1])

    # -- Keras integration (`predict` returns the output class, registered as a tree below)
    @staticmethod
    def _prediction(y_pred):
        if isinstance(y_pred, ModelOutput):
            return y_pred["logits"] if "logits" in y_pred else y_pred["last_hidden_state"]
        return y_pred

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss on `logits`; without one, the model's own loss (mean of `per_sample_loss`)."""
        if getattr(self, "_compile_loss", None) is None and isinstance(y_pred, ModelOutput):
            if y is not None and "logits" in y_pred:
                losses = per_sample_loss(self.config, y, y_pred["logits"])
            elif "loss" in y_pred:
                losses = y_pred["loss"]
            else:
                raise InputError(f"{type(self).__name__} has no loss of its own without labels: pass labels "
                                 "(y) to fit, or compile with a loss.")
            if sample_weight is not None:
                weights = ops.cast(ops.reshape(sample_weight, (-1,)), losses.dtype)
                loss = ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1e-12)
            else:
                loss = ops.mean(losses)
            for extra in self.losses:
                loss = loss + ops.cast(extra, loss.dtype)
            return loss
        return super().compute_loss(x=x, y=y, y_pred=self._prediction(y_pred), sample_weight=sample_weight,
                                    training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, self._prediction(y_pred), sample_weight=sample_weight)

    # -- export
    def export(self, filepath, format: str = "tf_saved_model", verbose=None, input_signature=None,
               image_size: int | tuple[int, int] | None = None, **kwargs):
        """Export a TensorFlow SavedModel whose `serve` endpoint takes float (batch, C, H, W) pixel values
        (any batch size) and returns a dict of the output's tensors (e.g. `{"logits": ...}`).

        Args:
            filepath: folder to write.
            format: "tf_saved_model" (other Keras formats are passed to `keras.Model.export`).
            input_signature: overrides the default `[TensorSpec((None, C, H, W), float32)]`.
            image_size: H and W of the default signature (`config.image_size` when None); height and
                width must be fixed in a SavedModel, the batch stays dynamic.

        Example:
            >>> model.export("efficientformer_savedmodel")                       # doctest: +SKIP
            >>> served = tf.saved_model.load("efficientformer_savedmodel")        # doctest: +SKIP
            >>> served.serve(tf.zeros((3, 3, 224, 224)))["logits"].shape         # doctest: +SKIP
            TensorShape([3, 1000])
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature,
                                  **kwargs)
        tf = require("tensorflow", "tf", "exporting a SavedModel")
        from keras.export import ExportArchive

        if input_signature is None:
            size = image_size or self.config.image_size
            height, width = (size, size) if isinstance(size, int) else size
            input_signature = [tf.TensorSpec((None, self.config.num_channels, height, width), tf.float32,
                                             name="pixel_values")]
        archive = ExportArchive()
        archive.track(self)
        archive.add_endpoint("serve", lambda pixel_values: dict(self(pixel_values, training=False)),
                             input_signature=input_signature)
        archive.write_out(filepath, verbose=bool(verbose))
        return filepath

    # -- loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, from_pt: bool | None = None,
                        config: EfficientFormerConfig | None = None, **kwargs):
        """Load weights from a folder or hub id: `tf_model.h5` (transformers 4.x layout) or PyTorch weights.

        Args:
            name_or_path: folder written by `save_pretrained` (ours or transformers'), a hub id such as
                `"snap-research/efficientformer-l1-300"`, or a `tf_model.h5` / `.safetensors` / `.bin` file
                (with a `config.json` beside it, or `config`). With torch installed, PyTorch weights of every
                layout `efficientformer.checkpoints.load_checkpoint` reads also work (timm hub folders and
                ids, the original release's `.pth`); without torch, `model.safetensors` in transformers' layout.
            from_pt: True: convert `model.safetensors` / `pytorch_model.bin`; False: only `tf_model.h5`;
                None (default): `tf_model.h5` when present, else the PyTorch weights.
            config: use this configuration instead of the checkpoint's.
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
        hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        name = os.fspath(name_or_path)
        folder = (os.path.dirname(name) or ".") if os.path.isfile(name) else name
        path, is_pt = tf_weights.find_weights_file(name, from_pt=from_pt, **hub)
        processor = None
        if is_pt and _torch_available():
            # any PyTorch layout (transformers, timm, original release), config inferred when absent
            from .checkpoints import load_checkpoint

            checkpoint = load_checkpoint(name, **hub)
            stored_config, processor, path = checkpoint.config, checkpoint.processor, checkpoint.source
            weights = tf_weights.pt_to_keras({k: v.detach().cpu().float().numpy() if v.is_floating_point()
                                              else v.cpu().numpy() for k, v in checkpoint.state_dict.items()})
        else:
            stored_config = EfficientFormerConfig.from_pretrained(folder, **hub) if config is None or kwargs else None
            weights = tf_weights.pt_to_keras(tf_weights.read_pt(path)) if is_pt else tf_weights.read_h5(path)
            processor = _processor_settings(folder, hub)
        if config is None:
            config = stored_config
        if kwargs:
            config = config.copy(**kwargs)
        reinit_heads = stored_config is not None and stored_config.num_labels != config.num_labels
        model = cls(config)
        model.load_weights_dict(weights, reinit_heads=reinit_heads, source=path)
        model.image_processor = processor
        return model

    def load_weights_dict(self, weights: dict[str, np.ndarray], reinit_heads: bool = False,
                          source: str = "the checkpoint") -> dict[str, list[str]]:
        """Assign {name: array} (names as `named_weights()`, e.g. from `tf_weights.read_h5`).

        Every model weight must be given with its shape, except the heads when `reinit_heads` (a new
        `num_labels`), which keep their fresh initialization. Weights of the file the model does not use
        are reported with a warning (e.g. the distillation head when loading a WithTeacher checkpoint into
        `TFEfficientFormerForImageClassification`).

        Returns:
            {"missing": [...], "unused": [...], "reinitialized": [...]} names.

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
        mismatched = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(named[k].shape)}"
                      for k in named if k in given and k not in skip and tuple(given[k].shape) != tuple(named[k].shape)]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise CheckpointError(f"{source} lacks {len(missing)} weights of {type(self).__name__}: {shown}. It was "
                                  "saved for another architecture or is incomplete; to train new heads pass num_labels.")
        if mismatched:
            shown = "; ".join(mismatched[:5])
            raise CheckpointError(f"{source} does not fit {type(self).__name__} ({len(mismatched)} weights of another "
                                  f"shape: {shown}); check the config (depths, hidden_sizes, resolution, num_labels).")
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
        return {"missing": missing, "unused": unused, "reinitialized": sorted(skip)}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `tf_model.h5` (transformers 4.x layout: transformers' TF classes load it), `config.json`
        and `preprocessor_config.json` (the processor the model was loaded with, else the default one).

        Example:
            >>> model.save_pretrained("my-efficientformer")                                # doctest: +SKIP
            >>> TFEfficientFormerForImageClassification.from_pretrained("my-efficientformer")  # doctest: +SKIP
        """
        from .fileio import write_folder

        if not self.built:
            self.build()
        config = self.config.copy()
        config.extra["architectures"] = [type(self).__name__[2:]]
        weights = {name: np.asarray(v.numpy()) for name, v in self.named_weights().items()}
        trainable = {name: w for name, w in weights.items() if not name.rsplit("/", 1)[-1].startswith("moving_")}
        ordered = dict(trainable)
        for block in _meta3d_prefixes(weights):  # transformers' non-trainable index tables
            r = self.config.resolution
            ordered[f"{block}/token_mixer/attention_bias_idxs"] = bias_index(r, r).astype(np.int32)
        ordered.update({name: w for name, w in weights.items() if name not in trainable})
        # built beside `folder` and swapped in at once: a kill leaves the old model or the new one, and an
        # older model.safetensors / pytorch_model.bin there (which loaders prefer) does not survive
        with write_folder(folder) as tmp:
            config.save_pretrained(tmp)
            tf_weights.write_h5(os.path.join(tmp, tf_weights.TF_WEIGHTS_NAME), ordered, self.keras_name,
                                keras_version=keras.__version__)
            _save_processor(self.image_processor, tmp)


def _pool(tokens, width: int):
    """(B, N, C) tokens -> (B, C) mean, the pooling before the heads."""
    shape = tuple(getattr(tokens, "shape", ()))
    if len(shape) != 3 or shape[-1] != width:
        raise InputError(f"forward_head takes the (batch, tokens, {width}) output of forward_features, got {shape}.")
    return ops.mean(tokens, axis=1)


def _meta3d_prefixes(weights: dict) -> list[str]:
    suffix = "/token_mixer/attention_biases"
    return [name[: -len(suffix)] for name in weights if name.endswith(suffix)]


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _processor_settings(folder, hub: dict) -> dict | None:
    """The checkpoint's `preprocessor_config.json` settings, or None when it has none."""
    import json

    from .hub import resolve_file

    try:
        path = resolve_file(folder, "preprocessor_config.json", required=False, **hub)
    except CheckpointError:
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _save_processor(settings, folder) -> None:
    """Write `preprocessor_config.json`: the settings the model was loaded with, else the default ones."""
    try:
        from .processing import EfficientFormerImageProcessor
    except ImportError:  # pragma: no cover - the processor module ships with the package
        return
    if not isinstance(settings, EfficientFormerImageProcessor):
        settings = EfficientFormerImageProcessor.from_dict(settings or {})
    settings.save_pretrained(folder)


@_serializable
class TFEfficientFormerModel(TFEfficientFormerPreTrainedModel):
    """The backbone: images (B, C, H, W) to normalized tokens (B, N, C_last).

    Example:
        >>> import numpy as np
        >>> from efficientformer import EfficientFormerConfig, TFEfficientFormerModel
        >>> model = TFEfficientFormerModel(EfficientFormerConfig.from_preset("l1"))
        >>> model(np.zeros((1, 3, 224, 224), "float32")).last_hidden_state.shape
        TensorShape([1, 49, 448])
    """

    keras_name = "tf_efficient_former_model"

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.efficientformer = TFEfficientFormerMainLayer(config, name="efficientformer")
        self.build()

    def call(self, pixel_values, output_attentions: bool | None = None, output_hidden_states: bool | None = None,
             return_dict: bool | None = None, training: bool = False):
        """Run the backbone.

        Args:
            pixel_values: float (B, num_channels, H, W) array or tensor, normalized as the image processor
                does; any H, W >= 32.
            output_attentions: also return each Meta3D block's attention probabilities (B, heads, N, N).
            output_hidden_states: also return the stem, every stage and downsample output (B, C, H, W) and
                the last stage's tokens (B, N, C).
            return_dict: return a `BaseModelOutput` (default) instead of a tuple.
            training: BatchNorm batch statistics, dropout and stochastic depth.

        Returns:
            `BaseModelOutput` with `last_hidden_state` (B, N, C_last).

        Raises:
            InputError: not 4-D, wrong channel count, integer dtype, or smaller than 32x32.
        """
        tokens, states, attentions = self._backbone(pixel_values, output_hidden_states, training)
        out = BaseModelOutput(last_hidden_state=tokens, hidden_states=states,
                              attentions=attentions if output_attentions else None)
        return out if return_dict is not False else out.to_tuple()


@_serializable
class TFEfficientFormerForImageClassification(TFEfficientFormerPreTrainedModel):
    """Backbone + mean over tokens + one linear head (`classifier`); the class to fine-tune.

    Example:
        >>> import numpy as np
        >>> from efficientformer import EfficientFormerConfig, TFEfficientFormerForImageClassification
        >>> model = TFEfficientFormerForImageClassification(EfficientFormerConfig.from_preset("l1", num_labels=3))
        >>> out = model(np.zeros((2, 3, 224, 224), "float32"), labels=np.array([0, 2]))
        >>> out.logits.shape, out.loss.shape
        (TensorShape([2, 3]), TensorShape([2]))
    """

    keras_name = "tf_efficient_former_for_image_classification"

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.efficientformer = TFEfficientFormerMainLayer(config, name="efficientformer")
        self.classifier = self._new_head("classifier")
        self.build()

    def _heads(self) -> list[str]:
        return ["classifier"]

    def forward_head(self, x, pre_logits: bool = False):
        """(B, N, C) normalized tokens -> (B, num_labels) logits (the pooled (B, C) with `pre_logits`)."""
        pooled = _pool(x, self.config.hidden_sizes[-1])
        return pooled if pre_logits else self.classifier(pooled)

    def call(self, pixel_values, labels=None, output_attentions: bool | None = None,
             output_hidden_states: bool | None = None, return_dict: bool | None = None, training: bool = False):
        """Classify images.

        Args:
            pixel_values: float (B, num_channels, H, W); or a dict with `pixel_values` (and `labels`).
            labels: int (B,) class indices, float (B, num_labels) multi-hot targets, or floats for
                regression; the loss is then returned, one value per sample (B,) as transformers' TF classes.
            output_attentions, output_hidden_states, return_dict, training: as `TFEfficientFormerModel`.

        Returns:
            `ImageClassifierOutput` with `logits` (B, num_labels) and `loss` (B,) when labels are given.
        """
        if isinstance(pixel_values, dict) and labels is None:
            labels = pixel_values.get("labels")
        tokens, states, attentions = self._backbone(pixel_values, output_hidden_states, training)
        logits = self.forward_head(tokens)
        loss = per_sample_loss(self.config, labels, logits) if labels is not None else None
        out = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=states,
                                    attentions=attentions if output_attentions else None)
        return out if return_dict is not False else out.to_tuple()


@_serializable
class TFEfficientFormerForImageClassificationWithTeacher(TFEfficientFormerPreTrainedModel):
    """Backbone + a class head and a distillation head; `logits` is their mean (the paper's inference).

    Unlike transformers' class it needs no `hidden_size` in the config, accepts `training=True`, and with
    labels returns a per-sample loss (mean of both heads' losses) as our PyTorch class does.
    """

    keras_name = "tf_efficient_former_for_image_classification_with_teacher"

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.efficientformer = TFEfficientFormerMainLayer(config, name="efficientformer")
        self.classifier = self._new_head("classifier")
        self.distillation_classifier = self._new_head("distillation_classifier")
        self.build()

    def _heads(self) -> list[str]:
        return ["classifier", "distillation_classifier"]

    def forward_head(self, x, pre_logits: bool = False):
        """(B, N, C) normalized tokens -> (B, num_labels) logits, the mean of both heads as `call` gives
        them (the pooled (B, C) with `pre_logits`)."""
        pooled = _pool(x, self.config.hidden_sizes[-1])
        if pre_logits:
            return pooled
        return (self.classifier(pooled) + self.distillation_classifier(pooled)) / 2

    def call(self, pixel_values, labels=None, output_attentions: bool | None = None,
             output_hidden_states: bool | None = None, return_dict: bool | None = None, training: bool = False):
        """Classify images with both heads.

        Returns:
            `ImageClassifierWithTeacherOutput` with `logits` = (`cls_logits` + `distillation_logits`) / 2,
            each (B, num_labels), and `loss` (B,) when labels are given.
        """
        if isinstance(pixel_values, dict) and labels is None:
            labels = pixel_values.get("labels")
        tokens, states, attentions = self._backbone(pixel_values, output_hidden_states, training)
        pooled = self.forward_head(tokens, pre_logits=True)
        cls_logits, dist_logits = self.classifier(pooled), self.distillation_classifier(pooled)
        logits = (cls_logits + dist_logits) / 2
        loss = None
        if labels is not None:
            loss = (per_sample_loss(self.config, labels, cls_logits) + per_sample_loss(self.config, labels, dist_logits)) / 2
        out = ImageClassifierWithTeacherOutput(loss=loss, logits=logits, cls_logits=cls_logits,
                                               distillation_logits=dist_logits, hidden_states=states,
                                               attentions=attentions if output_attentions else None)
        return out if return_dict is not False else out.to_tuple()


def _register_output_trees() -> None:
    """Let Keras (optree) and JAX see the outputs as containers, so jit/fit/predict can return them."""
    classes = (BaseModelOutput, ImageClassifierOutput, ImageClassifierWithTeacherOutput)

    def flatten(out):
        return tuple(out.values()), tuple(out.keys())

    def make_unflatten(cls):
        return lambda keys, values: cls(**dict(zip(keys, values)))

    try:
        import optree

        for cls in classes:
            try:
                optree.register_pytree_node(cls, flatten, make_unflatten(cls), namespace="keras")
            except ValueError:  # already registered
                pass
    except ImportError:  # pragma: no cover - keras depends on optree
        pass
    if keras.backend.backend() == "jax":
        import jax

        for cls in classes:
            try:
                jax.tree_util.register_pytree_node(cls, flatten, make_unflatten(cls))
            except ValueError:
                pass


_register_output_trees()

__all__ = [
    "TFEfficientFormerPreTrainedModel", "TFEfficientFormerModel", "TFEfficientFormerForImageClassification",
    "TFEfficientFormerForImageClassificationWithTeacher", "TFEfficientFormerMainLayer", "ConvStem", "Downsample",
    "Pooling", "ConvMlp", "Meta4D", "Meta4DBlocks", "IntermediateStage", "Attention", "LinearMlp", "Meta3D",
    "Meta3DBlocks", "LastStage", "Encoder", "DropPath", "HostTruncatedNormal", "check_pixel_values", "check_labels",
    "per_sample_loss",
]
