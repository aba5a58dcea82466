"""The PyTorch models: `EfficientFormerPreTrainedModel` (initialization, input checks), the backbone
`EfficientFormerModel` and the classifiers `EfficientFormerForImageClassification` and
`EfficientFormerForImageClassificationWithTeacher`, all with one forward surface, as timm's:
`forward_features` (images -> normalized tokens), `forward_head(x, pre_logits=False)` (tokens -> logits,
or the pooled features) and `forward_intermediates` (the stage maps).

    pixel_values (B, C, H, W) -> EfficientFormerModel -> tokens (B, N, C_last) -> mean -> head(s) -> logits
"""

from __future__ import annotations

from typing import Any, Sequence

from ...config import EfficientFormerConfig
from ...constants import BASE_PREFIX, CLASS_HEAD, DISTILLATION_HEAD
from ...errors import InputError, require
from ..outputs import (BaseModelOutput, ImageClassifierOutput, ImageClassifierWithTeacherOutput, checked_num_classes,
                       features_request)
from ..validation import (NON_FINITE, REGRESSION, SINGLE_LABEL, check_label_range, check_label_shape, check_pixel_shape,
                          problem_type as problem_type_of)
from .features import FeatureInfoMixin, FeaturesOnlyBackbone, pool_tokens
from .layers import ConvStem, Encoder, IntermediateStage, Meta3DBlocks, Meta4DBlocks
from .loading import PretrainedIO

torch = require("torch", "torch", "the PyTorch EfficientFormer classes")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


def _tracing() -> bool:
    """True under torch.jit.trace, torch.compile and torch.export, where checks that read tensor values
    would become graph breaks, data-dependent guards or baked-in constants."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class EfficientFormerPreTrainedModel(FeatureInfoMixin, PretrainedIO, nn.Module):
    """Weights initialization, `from_pretrained` / `save_pretrained`, and the checks on inputs."""

    config_class = EfficientFormerConfig
    base_model_prefix = BASE_PREFIX

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be an {self.config_class.__name__}, got {type(config).__name__}.")
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

    # -- input checks (plain Python on shapes: free under tracing and compilation)
    def _check_pixel_values(self, pixel_values: Any) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor):
            raise InputError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
                             "use EfficientFormerImageProcessor(..., return_tensors='pt').")
        shape = tuple(pixel_values.shape)
        if torch.jit.is_tracing() and shape:  # traced sizes are tensors: no new TracerWarning from comparing them
            shape = (None,) + shape[1:]
        check_pixel_shape(shape, is_float=pixel_values.is_floating_point(), dtype=pixel_values.dtype,
                          num_channels=self.config.num_channels, processor_hint="return_tensors='pt'")
        return pixel_values.to(self.dtype)

    def _check_finite(self, pixel_values: torch.Tensor) -> None:
        """NaN or inf pixels would come out as NaN scores without a word. One sum is the fast path (a
        non-finite value makes it non-finite; only then is every value tested, so huge finite sums do not
        count); it needs the data, so it runs in eager mode only: traced, compiled and exported graphs
        stay free of it, as of the label range check. A training step on an accelerator skips it too: there
        reading the sum would wait for the GPU at every step, and a NaN batch shows in the loss, which the
        training loop checks."""
        if _tracing() or pixel_values.device.type == "meta":
            return
        if self.training and torch.is_grad_enabled() and pixel_values.device.type != "cpu":
            return
        total = pixel_values.sum(dtype=torch.float32)  # a float16 sum would overflow on large batches
        if not torch.isfinite(total) and not torch.isfinite(pixel_values).all():
            raise InputError(NON_FINITE)

    def _check_labels(self, labels: torch.Tensor, batch: int, problem_type: str) -> None:
        """Labels against the batch size and the heads, before any compute."""
        check_label_shape(tuple(labels.shape), batch, self.config.num_labels, problem_type)
        if problem_type == SINGLE_LABEL and not _tracing() and labels.numel():
            check_label_range(int(labels.min()), int(labels.max()), self.config.num_labels)


class EfficientFormerModel(FeaturesOnlyBackbone, EfficientFormerPreTrainedModel):
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

    supports_features_only = True

    def __init__(self, config: EfficientFormerConfig, *, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__(config)
        self.out_indices: tuple[int, ...] | None = features_request(config.num_stages, features_only, out_indices)
        self.patch_embed = ConvStem(config, config.hidden_sizes[0])
        self.encoder = Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.last_built_stage = config.num_stages - 1
        self.post_init()

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
        return pool_tokens(x, self.config.hidden_sizes[-1])

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
        maps = self._features_only_maps(pixel_values, output_attentions, output_hidden_states)
        if maps is not None:
            return maps
        self._refuse_if_pruned()
        tokens, states, _, _, attentions = self._run(pixel_values, keep_states=bool(output_hidden_states))
        output = BaseModelOutput(last_hidden_state=self.layernorm(tokens),
                                 hidden_states=states if output_hidden_states else None,
                                 attentions=attentions if output_attentions else None)
        return output if return_dict is not False else output.to_tuple()


class _ClassifierBase(EfficientFormerPreTrainedModel):
    _head_names: tuple[str, ...] = (CLASS_HEAD,)
    backbone_class: type = EfficientFormerModel  # EfficientFormerV2's classifiers name theirs

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__(config)
        self.efficientformer = self.backbone_class(config)
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
        if checked_num_classes(num_classes, global_pool) != self.config.num_labels:
            self.config.num_labels = num_classes
        reference = next(self.efficientformer.parameters())
        for name in self._head_names:
            head = self._head()
            head.apply(self._init_weights)
            setattr(self, name, head.to(device=reference.device, dtype=reference.dtype).train(self.training))

    def _problem_type(self, labels: torch.Tensor) -> str:
        return problem_type_of(self.config, not labels.is_floating_point() and not labels.is_complex()
                            and labels.dtype != torch.bool)

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
        if problem_type == REGRESSION:
            if self.config.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem_type == SINGLE_LABEL:
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
        pooled = pool_tokens(x, self.config.hidden_sizes[-1])
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

    _head_names = (CLASS_HEAD, DISTILLATION_HEAD)

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__(config)
        self.distillation_classifier = self._head()
        self.post_init()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C) normalized tokens -> (B, num_labels) logits, the mean of both heads as `forward`
        gives them (the pooled (B, C) features with `pre_logits=True`)."""
        pooled = pool_tokens(x, self.config.hidden_sizes[-1])
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



__all__ = [
    "EfficientFormerPreTrainedModel", "EfficientFormerModel", "EfficientFormerForImageClassification",
    "EfficientFormerForImageClassificationWithTeacher",
]
