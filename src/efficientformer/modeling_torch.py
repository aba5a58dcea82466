"""EfficientFormer in PyTorch, module by module as in the paper (Li et al., 2022, Fig. 3).

    image (B, 3, H, W)
      -> ConvStem                    two stride-2 3x3 convs             (B, C1, H/4, W/4)
      -> stage 1..3: Meta4D blocks   pooling mixer + conv MLP, 4-D      (B, Ci, H/2^(i+1), ...)
         with a Downsample (stride-2 conv) between stages
      -> last stage: Meta4D blocks, flatten to tokens, Meta3D blocks  (B, N, C4), N = H/32 * W/32
         Meta3D = LayerNorm + multi-head attention with learned relative-position biases + LayerNorm + MLP
      -> LayerNorm, mean over tokens, linear head(s)

Attribute names are transformers' (`patch_embed`, `intermediate_stages`, `meta4D_layers`, ...) so that
state dicts written by transformers load unchanged, and ours load in transformers 4.57.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Sequence

from .config import EfficientFormerConfig
from .errors import CheckpointError, ConfigError, InputError, require
from .outputs import (BaseModelOutput, FeatureInfo, ImageClassifierOutput, ImageClassifierWithTeacherOutput,
                      intermediates_request, take_indices)

torch = require("torch", "torch", "the PyTorch EfficientFormer classes")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

logger = logging.getLogger("efficientformer")

MIN_IMAGE_SIZE = 32  # one token after the 32x reduction

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _tracing() -> bool:
    """True under torch.jit.trace, torch.compile and torch.export, where checks that read tensor values
    would become graph breaks, data-dependent guards or baked-in constants."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


# ------------------------------------------------------------------------------------------- layers
class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch of whole samples with probability `rate` in training,
    and rescales the kept ones by 1 / (1 - rate) so that the expectation is unchanged."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def _layer_scale(config: EfficientFormerConfig, dim: int) -> nn.Parameter | None:
    if not config.use_layer_scale:
        return None
    return nn.Parameter(torch.full((dim,), float(config.layer_scale_init_value)))


class ConvStem(nn.Module):
    """Two 3x3 stride-2 convolutions with BatchNorm and ReLU: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, config: EfficientFormerConfig, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.convolution1 = nn.Conv2d(config.num_channels, mid, 3, stride=2, padding=1)
        self.batchnorm_before = nn.BatchNorm2d(mid, eps=config.batch_norm_eps)
        self.convolution2 = nn.Conv2d(mid, out_channels, 3, stride=2, padding=1)
        self.batchnorm_after = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.batchnorm_before(self.convolution1(x)))
        return F.relu(self.batchnorm_after(self.convolution2(x)))


class Downsample(nn.Module):
    """Strided convolution + BatchNorm between stages: (B, Ci, H, W) -> (B, Ci+1, H/2, W/2)."""

    def __init__(self, config: EfficientFormerConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, out_channels, config.downsample_patch_size,
                                    stride=config.downsample_stride, padding=config.downsample_pad)
        self.norm = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.projection(x))


class Pooling(nn.Module):
    """Token mixer of Meta4D blocks: average pooling minus the input (PoolFormer)."""

    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlp(nn.Module):
    """1x1 conv -> BN -> activation -> 1x1 conv -> BN, on (B, C, H, W)."""

    def __init__(self, config: EfficientFormerConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_expansion_ratio)
        self.convolution1 = nn.Conv2d(dim, hidden, 1)
        self.batchnorm_before = nn.BatchNorm2d(hidden, eps=config.batch_norm_eps)
        self.activation = _ACTIVATIONS[config.hidden_act]()
        self.convolution2 = nn.Conv2d(hidden, dim, 1)
        self.batchnorm_after = nn.BatchNorm2d(dim, eps=config.batch_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.activation(self.batchnorm_before(self.convolution1(x))))
        return self.dropout(self.batchnorm_after(self.convolution2(x)))


class Meta4D(nn.Module):
    """x + s1 * Pooling(x), then x + s2 * ConvMlp(x), on (B, C, H, W) with stochastic depth."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float) -> None:
        super().__init__()
        self.token_mixer = Pooling(config.pool_size)
        self.mlp = ConvMlp(config, dim)
        self.layer_scale_1 = _layer_scale(config, dim)
        self.layer_scale_2 = _layer_scale(config, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(_scale(self.layer_scale_1, self.token_mixer(x), channel_dim=1))
        return x + self.drop_path(_scale(self.layer_scale_2, self.mlp(x), channel_dim=1))


def _scale(scale: torch.Tensor | None, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    if scale is None:
        return x
    return x * (scale.view(-1, 1, 1) if channel_dim == 1 else scale)


def _call_block(owner: nn.Module, block: nn.Module, *args: Any) -> Any:
    """`block(*args)`, recomputed in the backward pass instead of kept (activation checkpointing) when the
    owner's `grad_checkpointing` is on in training; the gradients are the same, the memory is one block's."""
    if not (owner.grad_checkpointing and owner.training and torch.is_grad_enabled()):
        return block(*args)
    if torch.compiler.is_compiling():  # the compiled graph replays the block itself; context_fn is eager-only
        return checkpoint(block, *args, use_reentrant=False)
    return checkpoint(block, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _keep_batchnorm_statistics(block)))


@contextlib.contextmanager
def _keep_batchnorm_statistics(block: nn.Module):
    """Around the recomputation: BatchNorm in training updates its running statistics on every call, so
    without this a checkpointed block would count each batch twice and drift from the plain model."""
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class Meta4DBlocks(nn.Module):
    """A run of Meta4D blocks of one width."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Meta4D(config, dim, rate) for rate in drop_paths)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = _call_block(self, block, x)
        return x


class IntermediateStage(nn.Module):
    """One of stages 1..3: a run of Meta4D blocks (B, Ci, Hi, Wi) -> same shape."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.meta4D_layers = Meta4DBlocks(config, dim, drop_paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.meta4D_layers(x)


class Attention(nn.Module):
    """Multi-head self-attention with a learned bias per head and relative offset (|d_row|, |d_col|).

    Shapes: tokens (B, N, C) -> (B, N, C); probabilities (B, heads, N, N). `attention_biases` holds
    (heads, R * R) for the R x R grid of training. At another grid (H, W) the table is resized by
    bilinear interpolation with aligned corners (see `efficientformer.attention_bias`); it is computed
    from the parameters on every call, so it is never stale.
    """

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__()
        dim, heads, key_dim = config.dim, config.num_attention_heads, config.key_dim
        self.num_heads, self.key_dim = heads, key_dim
        self.value_dim = int(config.attention_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.resolution = config.resolution
        self.qkv = nn.Linear(dim, heads * (2 * key_dim + self.value_dim))
        self.projection = nn.Linear(heads * self.value_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, config.resolution ** 2))
        self.register_buffer("attention_bias_idxs", _bias_index(config.resolution, config.resolution), persistent=True)

    def bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """(heads, N, N) additive attention bias for a token grid (H, W)."""
        if grid == (self.resolution, self.resolution):
            return self.attention_biases[:, self.attention_bias_idxs]
        table = self.attention_biases.view(1, self.num_heads, self.resolution, self.resolution)
        table = F.interpolate(table.float(), size=grid, mode="bilinear", align_corners=True)
        table = table.to(self.attention_biases.dtype).view(self.num_heads, grid[0] * grid[1])
        return table[:, _bias_index(*grid, device=table.device)]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, self.num_heads, -1).transpose(1, 2)
        query, key, value = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        scores = (query @ key.transpose(-2, -1)) * self.scale + self.bias(grid)
        probs = scores.softmax(dim=-1)  # (B, heads, N, N)
        out = (probs @ value).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.value_dim)
        return self.projection(out), probs


def _bias_index(grid_h: int, grid_w: int, device: Any = None) -> torch.Tensor:
    """(N, N) column of the bias table for each token pair: |d_row| * W + |d_col| (row-major tokens)."""
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, device=device).repeat(grid_h)
    return (rows[:, None] - rows[None, :]).abs() * grid_w + (cols[:, None] - cols[None, :]).abs()


class LinearMlp(nn.Module):
    """Linear -> activation -> Linear on tokens (B, N, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_expansion_ratio)
        self.linear_in = nn.Linear(dim, hidden)
        self.activation = _ACTIVATIONS[config.hidden_act]()
        self.linear_out = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear_out(self.dropout(self.activation(self.linear_in(x)))))


class Meta3D(nn.Module):
    """x + s1 * Attention(LN(x)), then x + s2 * LinearMlp(LN(x)), on tokens (B, N, C)."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_path: float) -> None:
        super().__init__()
        self.layernorm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.token_mixer = Attention(config)
        self.layernorm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = LinearMlp(config, dim)
        self.layer_scale_1 = _layer_scale(config, dim)
        self.layer_scale_2 = _layer_scale(config, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        mixed, probs = self.token_mixer(self.layernorm1(x), grid)
        x = x + self.drop_path(_scale(self.layer_scale_1, mixed, channel_dim=-1))
        x = x + self.drop_path(_scale(self.layer_scale_2, self.mlp(self.layernorm2(x)), channel_dim=-1))
        return x, probs


class Meta3DBlocks(nn.Module):
    """A run of Meta3D blocks; returns the tokens and every block's attention probabilities."""

    def __init__(self, config: EfficientFormerConfig, dim: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Meta3D(config, dim, rate) for rate in drop_paths)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        attentions = []
        for block in self.blocks:
            x, probs = _call_block(self, block, x, grid)
            attentions.append(probs)
        return x, tuple(attentions)


class LastStage(nn.Module):
    """Meta4D blocks on (B, C, H, W), flatten to tokens (B, H*W, C), then Meta3D blocks."""

    def __init__(self, config: EfficientFormerConfig, drop_paths: Sequence[float]) -> None:
        super().__init__()
        dim, n4d = config.hidden_sizes[-1], config.num_meta4d_last_stage
        self.meta4D_layers = Meta4DBlocks(config, dim, drop_paths[:n4d])
        self.meta3D_layers = Meta3DBlocks(config, dim, drop_paths[n4d:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
        x = self.meta4D_layers(x)
        grid = (x.shape[2], x.shape[3])
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        tokens, attentions = self.meta3D_layers(tokens, grid)
        return tokens, attentions, grid


def _downsamples_after(config: EfficientFormerConfig) -> list[bool]:
    """Whether a Downsample follows each of the stages before the last."""
    return [bool(config.downsamples[i]) or config.hidden_sizes[i] != config.hidden_sizes[i + 1]
            for i in range(config.num_stages - 1)]


def _stage_positions(config: EfficientFormerConfig) -> list[int]:
    """Index in `Encoder.intermediate_stages` of each stage before the last (Downsamples sit between)."""
    positions, position = [], 0
    for has_downsample in _downsamples_after(config):
        positions.append(position)
        position += 2 if has_downsample else 1
    return positions


class Encoder(nn.Module):
    """Stages 1..3 (each Meta4D blocks, then a Downsample) and the last stage."""

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__()
        rates = config.block_drop_path_rates()
        starts = [sum(config.depths[:i]) for i in range(config.num_stages)]
        stages: list[nn.Module] = []
        for i, has_downsample in enumerate(_downsamples_after(config)):
            stages.append(IntermediateStage(config, config.hidden_sizes[i], rates[starts[i]:starts[i + 1]]))
            if has_downsample:
                stages.append(Downsample(config, config.hidden_sizes[i], config.hidden_sizes[i + 1]))
        self.intermediate_stages = nn.ModuleList(stages)
        self.last_stage = LastStage(config, rates[starts[-1]:])


# ----------------------------------------------------------------------------------------- models
class EfficientFormerPreTrainedModel(nn.Module):
    """Weights initialization, `from_pretrained` / `save_pretrained`, and the checks on inputs."""

    config_class = EfficientFormerConfig
    base_model_prefix = "efficientformer"

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__()
        if not isinstance(config, EfficientFormerConfig):
            raise TypeError(f"config must be an EfficientFormerConfig, got {type(config).__name__}.")
        config.validate()
        self.config = config
        self.processor_settings: dict | None = None

    # -- initialization
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def post_init(self) -> None:
        """Initialize every weight: normal(0, `initializer_range`) for convolutions and linear layers, zero
        biases, unit LayerNorms; layer scales start at `layer_scale_init_value`, attention biases at 0."""
        self.apply(self._init_weights)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (buffers excluded); L1 with both 1000-class heads has 12,289,928."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- timm's feature API
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every Meta4D and Meta3D block in the backward pass instead of keeping its activations
        (`torch.utils.checkpoint`), as timm's `set_grad_checkpointing`: in training only, with the same
        gradients and BatchNorm statistics, for much less activation memory at about one more forward."""
        for module in self.modules():
            if isinstance(module, (Meta4DBlocks, Meta3DBlocks)):
                module.grad_checkpointing = bool(enable)

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
        backbone = self if isinstance(self, EfficientFormerModel) else self.efficientformer
        prefix = "" if backbone is self else self.base_model_prefix + "."
        config, reduction, info = self.config, 4, []  # the stem's two stride-2 convolutions
        positions, downsamples = _stage_positions(config), _downsamples_after(config)
        for i, width in enumerate(config.hidden_sizes):
            last = i == config.num_stages - 1
            module = "encoder.last_stage" if last else f"encoder.intermediate_stages.{positions[i]}"
            info.append({"num_chs": width, "reduction": reduction, "module": prefix + module})
            if not last and downsamples[i]:
                reduction *= config.downsample_stride
        return FeatureInfo(info, backbone.out_indices)

    # -- input checks (plain Python on shapes: free under tracing and compilation)
    def _check_pixel_values(self, pixel_values: Any) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor):
            raise InputError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
                             "use EfficientFormerImageProcessor(..., return_tensors='pt').")
        if pixel_values.ndim != 4:
            raise InputError(f"pixel_values must be 4-D (batch, channels, height, width), got shape "
                             f"{tuple(pixel_values.shape)}; add a batch dimension with .unsqueeze(0) for one image.")
        if not pixel_values.is_floating_point():
            raise InputError(f"pixel_values must be floating point, got {pixel_values.dtype}; rescale and "
                             "normalize the images (the image processor does it).")
        batch, channels, height, width = pixel_values.shape
        if not torch.jit.is_tracing() and batch == 0:  # traced sizes are tensors: no new TracerWarning
            raise InputError("pixel_values holds no images (batch size 0); pass at least one image, "
                             "or skip the call for an empty batch.")
        if channels != self.config.num_channels:
            raise InputError(f"pixel_values has {channels} channels but the model takes {self.config.num_channels}; "
                             "pass channels-first images (B, C, H, W) with the right number of channels.")
        if min(height, width) < MIN_IMAGE_SIZE:
            raise InputError(f"images of {height}x{width} are too small: the model needs at least "
                             f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels; resize them first.")
        return pixel_values.to(self.dtype)

    @staticmethod
    def _check_finite(pixel_values: torch.Tensor) -> None:
        """NaN or inf pixels would come out as NaN scores without a word. One sum is the fast path (a
        non-finite value makes it non-finite; only then is every value tested, so huge finite sums do not
        count); it needs the data, so it runs in eager mode only: traced, compiled and exported graphs
        stay free of it, as of the label range check."""
        if _tracing() or pixel_values.device.type == "meta":
            return
        total = pixel_values.sum(dtype=torch.float32)  # a float16 sum would overflow on large batches
        if not torch.isfinite(total) and not torch.isfinite(pixel_values).all():
            raise InputError("pixel_values holds NaN or infinite values; check how the images were decoded "
                             "and normalized (the image processor gives finite values).")

    def _check_labels(self, labels: torch.Tensor, batch: int, problem_type: str) -> None:
        """Labels against the batch size and the heads, before any compute."""
        num_labels = self.config.num_labels
        if num_labels == 0:
            raise InputError("this model has no classification head (num_labels=0) to compute a loss with; "
                             "give it one with reset_classifier(num_classes) or drop the labels.")
        if labels.ndim == 0 or labels.shape[0] != batch:
            held = f"{labels.shape[0]} entries" if labels.ndim else "a single value"
            raise InputError(f"labels hold {held} for a batch of {batch} images; give one label per image.")
        expected = (batch, num_labels)
        if problem_type == "single_label_classification":
            if labels.ndim != 1:
                raise InputError(f"class labels must have shape ({batch},), got {tuple(labels.shape)}; for "
                                 "multi-label targets pass floats of shape (batch, num_labels).")
            if not _tracing() and labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
                raise InputError(f"class labels must lie in 0..{num_labels - 1}, got values from {int(labels.min())} "
                                 f"to {int(labels.max())}; check the label mapping or num_labels.")
        elif tuple(labels.shape) != expected and not (num_labels == 1 and labels.numel() == batch):
            raise InputError(f"labels for {problem_type} must have shape {expected}, "
                             f"got {tuple(labels.shape)}.")

    # -- loading and saving
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
                `argparse.Namespace` (only that class is allowed; see `efficientformer.checkpoints`).
            features_only, out_indices: `EfficientFormerModel` only: build the features-only backbone that
                returns the maps of these stages (all with `features_only=True`), as timm's `features_only`.
            **config_overrides: config fields to change, e.g. `num_labels=10` or `id2label={...}`.

        Raises:
            CheckpointError: the files are missing, corrupt, or do not fit the model.

        Example:
            >>> model = EfficientFormerForImageClassification.from_pretrained("path/to/folder", num_labels=5,
            ...                                                              ignore_mismatched_sizes=True)
        """
        from .checkpoints import load_checkpoint

        features = {}
        if features_only or out_indices is not None:
            features = {"features_only": True, "out_indices": out_indices}
        if features and not issubclass(cls, EfficientFormerModel):
            raise ConfigError(f"out_indices/features_only build a features-only backbone, and {cls.__name__} is a "
                              "classifier; load it with EfficientFormerModel.from_pretrained(path, out_indices=...).")
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
        backbone_missing = [k for k in missing if not _is_head(k)]
        if backbone_missing:
            raise CheckpointError(f"the checkpoint lacks {len(backbone_missing)} backbone weights of this model, "
                                  f"e.g. {backbone_missing[:3]}; it was saved for another architecture or is incomplete.")
        bad = {k for k, _, _ in mismatched}
        self.load_state_dict({k: v for k, v in state_dict.items() if k in own and k not in bad}, strict=False)
        if missing or bad:
            logger.warning("newly initialized weights (train them before use): %s", sorted(missing + list(bad)))
        if unexpected:
            logger.info("weights of the checkpoint not used by %s: %s", type(self).__name__, unexpected)
        return {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}

    def _align_prefix(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prefix = self.base_model_prefix + "."
        has_prefix = any(k.startswith(prefix) for k in state_dict)
        wants_prefix = any(k.startswith(prefix) for k in self.state_dict())
        if has_prefix and not wants_prefix:  # a classifier checkpoint into the bare model
            return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
        if wants_prefix and not has_prefix:  # a bare-model checkpoint into a classifier
            return {k if _is_head(k) else prefix + k: v for k, v in state_dict.items()}
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
        import os

        from .fileio import write_folder
        from .presets import RELEASED_PREPROCESSING
        from .processing import EfficientFormerImageProcessor

        config = self.config.copy()
        config.extra["architectures"] = [type(self).__name__]
        config.extra["dtype"] = str(self.dtype).replace("torch.", "")
        if processor is None:
            processor = self.processor_settings
        if not isinstance(processor, EfficientFormerImageProcessor):  # bad settings fail before anything is written
            processor = EfficientFormerImageProcessor(**(processor or RELEASED_PREPROCESSING))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # the whole folder is built beside `folder` and swapped in at once: a kill leaves the old model or
        # the new one, and the old model's other weight files (a .bin beside a new .safetensors) go with it
        with write_folder(folder) as tmp:
            config.save_pretrained(tmp)
            if safe_serialization:
                from safetensors.torch import save_file

                save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
            else:
                torch.save(state, os.path.join(tmp, "pytorch_model.bin"))
            processor.save_pretrained(tmp)


def _is_head(key: str) -> bool:
    return key.startswith(("classifier.", "distillation_classifier."))


class EfficientFormerModel(EfficientFormerPreTrainedModel):
    """The EfficientFormer backbone: images (B, C, H, W) to normalized tokens (B, N, C_last).

    With `out_indices` (or `features_only=True` for all four stages) it is a features-only backbone, as
    timm's `features_only`: calling it returns the list of those stages' NCHW maps, and the stages after
    the last requested one do not run. Every module is kept, so its state dict is the backbone's (it saves
    and loads as any folder); `prune_intermediate_layers()` drops the unused ones, as timm's
    features-only wrapper does, when every parameter must get a gradient (DDP without
    `find_unused_parameters`).

    Example:
        >>> import torch
        >>> from efficientformer import EfficientFormerConfig, EfficientFormerModel
        >>> config = EfficientFormerConfig.from_preset("l1")
        >>> model = EfficientFormerModel(config).eval()
        >>> model(torch.randn(1, 3, 224, 224)).last_hidden_state.shape
        torch.Size([1, 49, 448])
        >>> backbone = EfficientFormerModel(config, out_indices=(1, 2, 3)).eval()
        >>> [tuple(f.shape[1:]) for f in backbone(torch.randn(1, 3, 224, 224))]
        [(96, 28, 28), (224, 14, 14), (448, 7, 7)]
    """

    def __init__(self, config: EfficientFormerConfig, *, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__(config)
        if features_only or out_indices is not None:
            wanted = config.num_stages if out_indices is None else out_indices
            self.out_indices: tuple[int, ...] | None = tuple(take_indices(config.num_stages, wanted, "out_indices"))
        else:
            self.out_indices = None
        self.patch_embed = ConvStem(config, config.hidden_sizes[0])
        self.encoder = Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.last_built_stage = config.num_stages - 1
        self.post_init()

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
            keep = _stage_positions(self.config)[max(take)] + 1
            self.encoder.intermediate_stages = self.encoder.intermediate_stages[:keep]
            self.encoder.last_stage = None
        self.last_built_stage = max(take)
        if self.out_indices is not None:
            self.out_indices = tuple(take)
        return take

    def _run(self, pixel_values: torch.Tensor, keep_states: bool, stop: int | None = None):
        """The one pass every output is built from, up to stage `stop` (default: all of them).

        Returns tokens (B, N, C) before the final norm (None when stopped before the last stage), the
        hidden states (stem, each stage and downsample output, the tokens) when `keep_states`, the
        outputs (B, Ci, Hi, Wi) of the stages before the last, the last token grid, and the attention
        probabilities.
        """
        last = self.config.num_stages - 1
        stop = last if stop is None else stop
        pixel_values = self._check_pixel_values(pixel_values)
        self._check_finite(pixel_values)
        x = self.patch_embed(pixel_values)
        states, stage_maps = [x], []
        for module in self.encoder.intermediate_stages:
            if len(stage_maps) > stop:  # the Downsample after the last needed stage
                break
            x = module(x)
            if isinstance(module, IntermediateStage):
                stage_maps.append(x)
            if keep_states:
                states.append(x)
        if stop < last:
            return None, tuple(states) if keep_states else None, stage_maps, None, ()
        tokens, attentions, grid = self.encoder.last_stage(x)
        states.append(tokens)
        return tokens, tuple(states) if keep_states else None, stage_maps, grid, attentions

    def _refuse_if_pruned(self) -> None:
        if self.layernorm is None:
            raise InputError(f"this backbone was pruned after stage {self.last_built_stage} "
                             "(prune_intermediate_layers), so it has no final norm and tokens; call "
                             "forward_intermediates for its stage maps, or use an unpruned model.")

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, C_last) tokens after the final LayerNorm."""
        self._refuse_if_pruned()
        return self.layernorm(self._run(pixel_values, keep_states=False)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C_last) tokens of `forward_features` -> (B, C_last) mean over tokens (the backbone has no
        head, as a timm model with `num_classes=0`)."""
        return _pool(x, self.config.hidden_sizes[-1])

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

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None):
        """Run the backbone.

        Args:
            pixel_values: float (B, num_channels, H, W), normalized as the image processor does; any
                H, W >= 32 (multiples of 32 give exact 1/32 token grids).
            output_attentions: also return each Meta3D block's attention (B, heads, N, N).
            output_hidden_states: also return the stem, every stage and downsample output, and the tokens.
            return_dict: return a `BaseModelOutput` (default) instead of a tuple.

        Returns:
            `BaseModelOutput` with `last_hidden_state` (B, N, C_last); a features-only backbone returns
            the list of its stage maps.
        """
        if self.out_indices is not None:
            if output_attentions or output_hidden_states:
                raise InputError(f"a features-only backbone (out_indices={self.out_indices}) returns its stage "
                                 "maps only; build EfficientFormerModel without out_indices for attentions "
                                 "or hidden states.")
            return self.forward_intermediates(pixel_values, self.out_indices, intermediates_only=True)
        self._refuse_if_pruned()
        tokens, states, _, _, attentions = self._run(pixel_values, keep_states=bool(output_hidden_states))
        output = BaseModelOutput(last_hidden_state=self.layernorm(tokens),
                                 hidden_states=states if output_hidden_states else None,
                                 attentions=attentions if output_attentions else None)
        return output if return_dict is not False else output.to_tuple()


def _pool(tokens: Any, width: int) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C) mean, the pooling before the heads."""
    if torch.jit.is_tracing():  # shapes are traced values there; the example input had the right ones
        return tokens.mean(dim=1)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[-1] != width:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise InputError(f"forward_head takes the (batch, tokens, {width}) output of forward_features, got {shape}.")
    return tokens.mean(dim=1)


class _ClassifierBase(EfficientFormerPreTrainedModel):
    _head_names: tuple[str, ...] = ("classifier",)

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__(config)
        self.efficientformer = EfficientFormerModel(config)
        self.classifier = self._head()

    def _head(self) -> nn.Module:
        width, n = self.config.hidden_sizes[-1], self.config.num_labels
        return nn.Linear(width, n) if n > 0 else nn.Identity()

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, C_last) tokens after the final LayerNorm."""
        return self.efficientformer.forward_features(pixel_values)

    def forward_intermediates(self, pixel_values: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False, *, out_indices: Sequence[int] | None = None):
        """As `EfficientFormerModel.forward_intermediates`; `forward_head(final)` gives the logits."""
        return self.efficientformer.forward_intermediates(
            pixel_values, indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
            intermediates_only=intermediates_only, out_indices=out_indices)

    def get_classifier(self) -> nn.Module | tuple[nn.Module, ...]:
        """The head (WithTeacher: both heads), as timm's `get_classifier`."""
        heads = tuple(getattr(self, name) for name in self._head_names)
        return heads if len(heads) > 1 else heads[0]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New, freshly initialized head(s) for `num_classes` classes (0: no head, `forward_head` returns the
        pooled features), as timm's. `config.num_labels` follows; a new count gets generic names
        (`LABEL_0`...), as `from_pretrained(..., num_labels=N)` gives them; set `config.id2label` after."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise InputError(f"num_classes must be a whole number >= 0, got {num_classes!r}.")
        if global_pool not in (None, "avg"):
            raise InputError(f"global_pool={global_pool!r} is not supported: the heads average the tokens ('avg').")
        if num_classes != self.config.num_labels:
            self.config.num_labels = num_classes
        reference = self.efficientformer.layernorm.weight
        for name in self._head_names:
            head = self._head()
            head.apply(self._init_weights)
            setattr(self, name, head.to(device=reference.device, dtype=reference.dtype).train(self.training))

    def _problem_type(self, labels: torch.Tensor) -> str:
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.config.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
            return "single_label_classification"
        return "multi_label_classification"

    def _checked_problem_type(self, labels: Any, batch: int) -> str:
        """The loss the labels ask for, after checking them against the batch and the heads."""
        if not isinstance(labels, torch.Tensor):
            raise InputError(f"labels must be a torch.Tensor, got {type(labels).__name__}; "
                             "e.g. torch.tensor([3, 0]) for class indices.")
        problem_type = self._problem_type(labels)
        self._check_labels(labels, batch, problem_type)
        return problem_type

    def _check_inputs(self, pixel_values: Any, labels: Any) -> str | None:
        """Images and labels checked together before the network runs (a wrong label must not cost a
        forward pass); the problem type of the loss when labels are given."""
        if labels is None:  # the backbone checks the images itself
            return None
        return self._checked_problem_type(labels, self._check_pixel_values(pixel_values).shape[0])

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss chosen as transformers chose it: MSE for one label or `problem_type="regression"`,
        cross-entropy for integer labels, binary cross-entropy with logits for float multi-hot labels."""
        return self._loss(logits, labels, self._checked_problem_type(labels, logits.shape[0]))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
        labels = labels.to(logits.device)
        if problem_type == "regression":
            if self.config.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1).long())
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class EfficientFormerForImageClassification(_ClassifierBase):
    """Backbone + mean pooling + one linear head.

    Example:
        >>> import torch
        >>> from efficientformer import EfficientFormerConfig, EfficientFormerForImageClassification
        >>> model = EfficientFormerForImageClassification(EfficientFormerConfig.from_preset("l1", num_labels=3))
        >>> out = model(torch.randn(2, 3, 224, 224), labels=torch.tensor([0, 2]))
        >>> out.logits.shape, out.loss.ndim
        (torch.Size([2, 3]), 0)
    """

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__(config)
        self.post_init()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C) normalized tokens -> (B, num_labels) logits of the class head (the pooled (B, C)
        features with `pre_logits=True`)."""
        pooled = _pool(x, self.config.hidden_sizes[-1])
        return pooled if pre_logits else self.classifier(pooled)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None):
        """Classify images.

        Args:
            pixel_values: float (B, num_channels, H, W).
            labels: int64 (B,) class indices, float (B, num_labels) multi-hot targets, or float values for
                regression; a loss is returned when given. They are checked before the network runs.
            output_attentions, output_hidden_states, return_dict: as `EfficientFormerModel.forward`.

        Returns:
            `ImageClassifierOutput` with `logits` (B, num_labels) and `loss` when labels are given.
        """
        problem_type = self._check_inputs(pixel_values, labels)
        base = self.efficientformer(pixel_values, output_attentions=output_attentions,
                                    output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.forward_head(base.last_hidden_state)
        loss = self._loss(logits, labels, problem_type) if labels is not None else None
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=base.hidden_states,
                                       attentions=base.attentions)
        return output if return_dict is not False else output.to_tuple()


class EfficientFormerForImageClassificationWithTeacher(_ClassifierBase):
    """Backbone + a class head and a distillation head; `logits` is their mean (the paper's inference).

    Unlike transformers' class it needs no `hidden_size` in the config, and with labels it returns a
    loss that trains both heads on the labels (use `efficientformer.training` to distil from a teacher).

    Example:
        >>> import torch
        >>> from efficientformer import EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher
        >>> model = EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig(num_labels=5)).eval()
        >>> out = model(torch.randn(1, 3, 224, 224))
        >>> out.logits.shape, torch.allclose(out.logits, (out.cls_logits + out.distillation_logits) / 2)
        (torch.Size([1, 5]), True)
    """

    _head_names = ("classifier", "distillation_classifier")

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__(config)
        self.distillation_classifier = self._head()
        self.post_init()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C) normalized tokens -> (B, num_labels) logits, the mean of both heads as `forward`
        gives them (the pooled (B, C) features with `pre_logits=True`)."""
        pooled = _pool(x, self.config.hidden_sizes[-1])
        if pre_logits:
            return pooled
        return (self.classifier(pooled) + self.distillation_classifier(pooled)) / 2

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None):
        """Classify images with both heads.

        Returns:
            `ImageClassifierWithTeacherOutput` with `logits` = (`cls_logits` + `distillation_logits`) / 2,
            each (B, num_labels), and `loss` (mean of both heads' losses) when labels are given; labels
            are checked before the network runs.
        """
        problem_type = self._check_inputs(pixel_values, labels)
        base = self.efficientformer(pixel_values, output_attentions=output_attentions,
                                    output_hidden_states=output_hidden_states, return_dict=True)
        pooled = self.forward_head(base.last_hidden_state, pre_logits=True)
        cls_logits, dist_logits = self.classifier(pooled), self.distillation_classifier(pooled)
        loss = None
        if labels is not None:
            loss = (self._loss(cls_logits, labels, problem_type) + self._loss(dist_logits, labels, problem_type)) / 2
        output = ImageClassifierWithTeacherOutput(loss=loss, logits=(cls_logits + dist_logits) / 2,
                                                  cls_logits=cls_logits, distillation_logits=dist_logits,
                                                  hidden_states=base.hidden_states, attentions=base.attentions)
        return output if return_dict is not False else output.to_tuple()


def model_class_for(state_dict: dict[str, Any]) -> type[EfficientFormerPreTrainedModel]:
    """The class whose heads a transformers-layout state dict holds: WithTeacher, classifier or backbone."""
    if "distillation_classifier.weight" in state_dict:
        return EfficientFormerForImageClassificationWithTeacher
    if "classifier.weight" in state_dict:
        return EfficientFormerForImageClassification
    return EfficientFormerModel


__all__ = [
    "EfficientFormerPreTrainedModel", "EfficientFormerModel", "EfficientFormerForImageClassification",
    "EfficientFormerForImageClassificationWithTeacher", "ConvStem", "Downsample", "Pooling", "ConvMlp", "Meta4D",
    "model_class_for", "Meta4DBlocks", "IntermediateStage", "Attention", "LinearMlp", "Meta3D", "Meta3DBlocks", "LastStage", "Encoder", "DropPath",
]
