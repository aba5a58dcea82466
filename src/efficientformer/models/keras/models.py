"""EfficientFormer on Keras 3: the TF classes transformers 4.x had, written with `keras.layers`/`keras.ops`,
mirroring `efficientformer.models.pytorch.models` name for name, with the same forward surface
(`forward_features`, `forward_head(x, pre_logits=False)`, `forward_intermediates`).

They run on the TensorFlow backend (the default) and on JAX (`KERAS_BACKEND=jax`). Images go in
channels-first, (B, C, H, W) float, as the image processor returns them; the layers work channels-last
inside (the stem transposes) and the hidden states come back channels-first, as transformers did.

Example:
    >>> from efficientformer import TFEfficientFormerForImageClassificationWithTeacher
    >>> model = TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(  # doctest: +SKIP
    ...     "snap-research/efficientformer-l1-300")
    >>> model(pixel_values).logits.shape                                             # doctest: +SKIP
    (1, 1000)
"""

from __future__ import annotations

from typing import Any

from ...config import EfficientFormerConfig
from ...constants import BASE_PREFIX, CLASS_HEAD, DISTILLATION_HEAD
from ...errors import ConfigError, InputError, require
from ..outputs import (BaseModelOutput, ImageClassifierOutput, ImageClassifierWithTeacherOutput, ModelOutput,
                       checked_num_classes, features_request)
from .features import FeaturesMixin, pool_tokens
from .inputs import check_finite, check_pixel_values
from .layers import TFEfficientFormerMainLayer, _dense, _serializable
from .loading import PretrainedIO
from .losses import check_labels, per_sample_loss

keras = require("keras", "tf", "the TensorFlow classes")
from keras import layers, ops  # noqa: E402


# ------------------------------------------------------------------------------------------ models
class TFEfficientFormerPreTrainedModel(FeaturesMixin, PretrainedIO, keras.Model):
    """Base of the three models: configuration, loading and saving, export, and Keras integration.

    `model.fit` works without a compiled loss (the model's own loss from the labels, as transformers did)
    or with one (applied to `logits`); `model.predict` returns the output class holding numpy arrays
    (`model.predict(x).logits`). Weights are all created by the constructor.
    """

    config_class = EfficientFormerConfig
    main_layer_class: type = TFEfficientFormerMainLayer  # EfficientFormerV2's classes name theirs
    base_model_prefix = BASE_PREFIX
    main_input_name = "pixel_values"
    keras_name = "tf_efficient_former_model"

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        if not isinstance(config, self.config_class):
            raise ConfigError(f"config must be an {self.config_class.__name__}, got {type(config).__name__}; "
                              f"use {type(self).__name__}.from_pretrained(...) to load a checkpoint.")
        config.validate()
        kwargs.setdefault("name", self.keras_name)
        super().__init__(**kwargs)
        self.config = config
        # preprocessing settings of the checkpoint (a dict or an EfficientFormerImageProcessor), set by
        # from_pretrained and written back by save_pretrained
        self.image_processor = None

    # -- structure
    _head_names: tuple[str, ...] = ()  # the heads' attribute and weight names, as the PyTorch classes'

    def build(self, input_shape=None) -> None:
        """Create every weight (shapes come from the config, not from an input); done by the constructor."""
        if self.built:
            return
        self.efficientformer.build(None)
        for head in self._head_names:
            getattr(self, head).build((None, self.config.hidden_sizes[-1]))

    def named_weights(self) -> dict[str, Any]:
        """{name: keras.Variable} with the names transformers' TF classes gave their weights
        (without model name and `:0`), e.g. `efficientformer/patch_embed/convolution1/kernel`."""
        out = self.efficientformer.named_weights("efficientformer/")
        for head in self._head_names:
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
        return cls(cls.config_class.from_dict(config["config"]), name=config.get("name"))

    def __call__(self, *args, **kwargs):
        # Validate before Keras runs the layers, so that errors are plain and nothing is computed.
        pixel_values = args[0] if args else kwargs.get("pixel_values")
        labels = kwargs.get("labels", args[1] if len(args) > 1 and self._head_names else None)
        if isinstance(pixel_values, dict):
            labels = pixel_values.get("labels", labels)
            pixel_values = pixel_values.get("pixel_values")
        if pixel_values is None:
            raise InputError(f"{type(self).__name__} needs pixel_values (batch, channels, height, width).")
        check_pixel_values(pixel_values, self.config.num_channels)
        if labels is not None and self._head_names:
            check_labels(self.config, labels, tuple(pixel_values.shape)[0])
        check_finite(pixel_values)
        return super().__call__(*args, **kwargs)

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


@_serializable
class TFEfficientFormerModel(TFEfficientFormerPreTrainedModel):
    """The backbone: images (B, C, H, W) to normalized tokens (B, N, C_last).

    With `out_indices` (or `features_only=True` for all four stages) it is a features-only backbone, as the
    PyTorch class: calling it returns the list of those stages' NCHW maps, and the stages after the last
    requested one do not run; every weight is kept, so it saves and loads as any backbone.

    Example:
        >>> import numpy as np
        >>> from efficientformer import EfficientFormerConfig, TFEfficientFormerModel
        >>> model = TFEfficientFormerModel(EfficientFormerConfig.from_preset("l1"))
        >>> model(np.zeros((1, 3, 224, 224), "float32")).last_hidden_state.shape
        TensorShape([1, 49, 448])
        >>> backbone = TFEfficientFormerModel(EfficientFormerConfig.from_preset("l1"), out_indices=(1, 2, 3))
        >>> [tuple(f.shape[1:]) for f in backbone(np.zeros((1, 3, 224, 224), "float32"))]
        [(96, 28, 28), (224, 14, 14), (448, 7, 7)]
    """

    keras_name = "tf_efficient_former_model"
    supports_features_only = True

    def __init__(self, config: EfficientFormerConfig, *, features_only: bool = False, out_indices=None,
                 **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.out_indices = features_request(config.num_stages, features_only, out_indices)
        self.efficientformer = self.main_layer_class(config, name="efficientformer")
        self.build()

    def get_config(self) -> dict:
        out = super().get_config()
        if self.out_indices is not None:
            out["out_indices"] = list(self.out_indices)
        return out

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        return cls(cls.config_class.from_dict(config["config"]), name=config.get("name"),
                   out_indices=config.get("out_indices"))

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
            `BaseModelOutput` with `last_hidden_state` (B, N, C_last); a features-only backbone returns
            the list of its stages' (B, C_i, H_i, W_i) maps instead.

        Raises:
            InputError: not 4-D, wrong channel count, integer dtype, or smaller than 32x32.
        """
        if self.out_indices is not None:
            return self.forward_intermediates(pixel_values, indices=list(self.out_indices), intermediates_only=True,
                                              training=training)
        tokens, states, attentions = self._backbone(pixel_values, output_hidden_states, training)
        out = BaseModelOutput(last_hidden_state=tokens, hidden_states=states,
                              attentions=attentions if output_attentions else None)
        return out if return_dict is not False else out.to_tuple()


class _ClassifierBase(TFEfficientFormerPreTrainedModel):
    """What both classifier classes share: their heads, as the PyTorch classes' `_ClassifierBase`."""

    def get_classifier(self):
        """The head (WithTeacher: both heads), as timm's `get_classifier`."""
        heads = tuple(getattr(self, name) for name in self._head_names)
        return heads if len(heads) > 1 else heads[0]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New, freshly initialized head(s) for `num_classes` classes (0: no head), as the PyTorch classes'
        and timm's. `config.num_labels` follows (a new count gets generic names `LABEL_0`...); the old
        heads' weights leave the model, so `model.weights`, `fit` and `save_pretrained` see the new ones."""
        if checked_num_classes(num_classes, global_pool) != self.config.num_labels:
            self.config.num_labels = num_classes
        # Keras locks a built layer's tracked state; a head is replaced as a unit, old variables untracked
        self._tracker.unlock()
        try:
            for name in self._head_names:
                old = getattr(self, name)
                if old in self._layers:
                    self._layers.remove(old)
                setattr(self, name, self._new_head(name))
                getattr(self, name).build((None, self.config.hidden_sizes[-1]))
        finally:
            self._tracker.lock()


@_serializable
class TFEfficientFormerForImageClassification(_ClassifierBase):
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
    _head_names = (CLASS_HEAD,)

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.efficientformer = self.main_layer_class(config, name="efficientformer")
        self.classifier = self._new_head(CLASS_HEAD)
        self.build()

    def forward_head(self, x, pre_logits: bool = False):
        """(B, N, C) normalized tokens -> (B, num_labels) logits (the pooled (B, C) with `pre_logits`)."""
        pooled = pool_tokens(x, self.config.hidden_sizes[-1])
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
class TFEfficientFormerForImageClassificationWithTeacher(_ClassifierBase):
    """Backbone + a class head and a distillation head; `logits` is their mean (the paper's inference).

    Unlike transformers' class it needs no `hidden_size` in the config, accepts `training=True`, and with
    labels returns a per-sample loss (mean of both heads' losses) as our PyTorch class does.
    """

    keras_name = "tf_efficient_former_for_image_classification_with_teacher"
    _head_names = (CLASS_HEAD, DISTILLATION_HEAD)

    def __init__(self, config: EfficientFormerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.num_labels = config.num_labels
        self.efficientformer = self.main_layer_class(config, name="efficientformer")
        self.classifier = self._new_head(CLASS_HEAD)
        self.distillation_classifier = self._new_head(DISTILLATION_HEAD)
        self.build()

    def forward_head(self, x, pre_logits: bool = False):
        """(B, N, C) normalized tokens -> (B, num_labels) logits, the mean of both heads as `call` gives
        them (the pooled (B, C) with `pre_logits`)."""
        pooled = pool_tokens(x, self.config.hidden_sizes[-1])
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
    "TFEfficientFormerForImageClassificationWithTeacher",
]
