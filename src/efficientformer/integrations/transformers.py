"""Our PyTorch classes inside transformers 5, which no longer ships EfficientFormer.

`register()` makes `AutoConfig`, `AutoModel`, `AutoModelForImageClassification` and `AutoImageProcessor`
(and with them `pipeline("image-classification")` and `Trainer`'s complete folders) answer for
`model_type="efficientformer"` with the transformers-native wrappers defined here:

- `EfficientFormerConfig`: a transformers config carrying our config's fields (`to_efficientformer()` gives ours);
- `EfficientFormerModel`, `EfficientFormerForImageClassification`, `EfficientFormerForImageClassificationWithTeacher`:
  `PreTrainedModel`s that hold our modules under the same state-dict names (`efficientformer.*`, `classifier.*`,
  `distillation_classifier.*`), so released checkpoints and folders written by this library load unchanged, and
  folders they write load in our classes;
- `EfficientFormerImageProcessor`: a `BaseImageProcessor` around our processor (same results, same file);
- the same for EfficientFormerV2, `model_type="efficientformer_v2"` (transformers never had it):
  `EfficientFormerV2Config`, `EfficientFormerV2Model`, `EfficientFormerV2ForImageClassification`,
  `EfficientFormerV2ForImageClassificationWithTeacher`.

With transformers 4.x, whose own EfficientFormer classes own "efficientformer", `register()` leaves that type
alone (and returns False; it still registers "efficientformer_v2"), and the wrappers still train with its
`Trainer`. Importing this module needs transformers; `import efficientformer` never imports it.

    >>> from efficientformer.integrations import register
    >>> register()  # True with transformers 5
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import transformers
from transformers import BatchFeature as _HFBatchFeature
from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from .. import config as _config
from ..config_v2 import EfficientFormerV2Config as _EfficientFormerV2Config
from ..constants import BASE_PREFIX
from ..models.pytorch import models as _ours
from ..models.pytorch import models_v2 as _ours_v2
from ..preprocessing.processor import EfficientFormerImageProcessor as _OurProcessor

logger = logging.getLogger("efficientformer")

MODEL_TYPE = _config.MODEL_TYPE
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
_PreTrainedConfig = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
# the WithTeacher output's extra tensors: Trainer.predict leaves them out, so predictions are the (N, labels) logits
_INFERENCE_IGNORED = ["cls_logits", "distillation_logits", "hidden_states", "attentions"]


def _field(default: Any) -> Any:
    if not dataclasses.is_dataclass(_PreTrainedConfig):  # transformers 4: plain class defaults (never registered)
        return copy.deepcopy(default)
    return dataclasses.field(default_factory=lambda: copy.deepcopy(default))


def _derived(ours: type) -> tuple[str, ...]:
    """The fields our config derives from others (V1: `hidden_size`, which transformers 4's classes read)."""
    return ("hidden_size",) if ours is _config.EfficientFormerConfig else ()


def _complete(self) -> None:
    if getattr(self, "hidden_size", "") is None and self.hidden_sizes:
        self.hidden_size = self.hidden_sizes[-1]


def _post_init(self, **kwargs: Any) -> None:
    _complete(self)
    _PreTrainedConfig.__post_init__(self, **kwargs)
    if self.architectures is None:  # the Auto classes read it to choose between the two heads
        self.architectures = []
    self.to_efficientformer()  # our checks, with their one-sentence errors, at construction


def _init_v4(self, **kwargs: Any) -> None:
    """transformers 4's configs are plain classes that set their fields in `__init__` (5's are dataclasses with
    `__post_init__`): ours first, then the base's, then the same completion and checks as `_post_init`. The
    wrappers then work with transformers 4's Trainer too, and `hidden_size` is written to `config.json`, where
    transformers 4's own WithTeacher class reads it."""
    for name, default in self._ours._defaults.items():
        setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
    for name in _derived(self._ours):
        setattr(self, name, kwargs.pop(name, None))
    _PreTrainedConfig.__init__(self, **kwargs)
    _complete(self)
    self.to_efficientformer()


def _to_efficientformer(self) -> _config.LabelledConfig:
    """Our config (`EfficientFormerConfig` or `EfficientFormerV2Config`) with the same architecture, labels and
    problem type."""
    fields = {name: copy.deepcopy(getattr(self, name)) for name in (*self._ours._defaults, *_derived(self._ours))}
    return self._ours(**fields, id2label=dict(self.id2label), problem_type=self.problem_type)


def _to_dict(self) -> dict[str, Any]:
    # transformers sets id2label alone when from_pretrained(..., id2label=...) is given: label2id follows it here
    data = _PreTrainedConfig.to_dict(self)
    if data.get("id2label") is not None:
        data["label2id"] = {name: int(i) for i, name in data["id2label"].items()}
    return data


def _from_efficientformer(cls, config: _config.LabelledConfig) -> _PreTrainedConfig:
    """The transformers config of one of ours (the fields of its `config.json`)."""
    data = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "label2id", "architectures")}
    data["id2label"] = {int(k): v for k, v in data["id2label"].items()}
    return cls(**data)


def _config_class(ours: type, name: str) -> type:
    """transformers' config class for one of ours: the same fields (as dataclass fields on transformers 5,
    plain defaults set in `__init__` on 4), its `model_type`, conversions both ways."""
    fields = {field: _field(value) for field, value in ours._defaults.items()}
    fields.update({field: None for field in _derived(ours)})
    namespace: dict[str, Any] = {"__annotations__": {field: Any for field in fields}, **fields}
    namespace.update(model_type=ours.model_type, keys_to_ignore_at_inference=list(_INFERENCE_IGNORED),
                     __module__=__name__, _ours=ours, __post_init__=_post_init, to_efficientformer=_to_efficientformer,
                     to_dict=_to_dict, from_efficientformer=classmethod(_from_efficientformer),
                     __doc__=f"transformers' view of `efficientformer.{ours.__name__}`: the same fields and "
                             f"`config.json`, `model_type` \"{ours.model_type}\".")
    if not dataclasses.is_dataclass(_PreTrainedConfig):
        namespace["__init__"] = _init_v4
    return type(name, (_PreTrainedConfig,), namespace)


EfficientFormerConfig = _config_class(_config.EfficientFormerConfig, "EfficientFormerConfig")
EfficientFormerV2Config = _config_class(_EfficientFormerV2Config, "EfficientFormerV2Config")


class EfficientFormerPreTrainedModel(PreTrainedModel):
    """A `PreTrainedModel` that holds one of our PyTorch models' modules under their own names.

    Subclasses name the class of ours in `_our_class`; `forward` is that class's forward (same outputs, same
    loss, same input checks), and the weights are its weights.
    """

    config_class = EfficientFormerConfig
    base_model_prefix = BASE_PREFIX
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _our_class: type = _ours.EfficientFormerPreTrainedModel
    _no_split_modules: list[str] = []
    accepts_loss_kwargs = False  # our loss is a batch mean: Trainer scales it for gradient accumulation itself

    def __init__(self, config: EfficientFormerConfig) -> None:
        super().__init__(config)
        inner = self._our_class(config.to_efficientformer())
        for name, child in inner.named_children():
            setattr(self, name, child)
        # ours runs the forward on the very same modules; kept outside the module tree so each weight has one name
        object.__setattr__(self, "_inner", inner)
        self.post_init()

    def _init_weights(self, module: Any) -> None:
        self._inner._init_weights(module)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """transformers' `from_pretrained`, then the index buffers that no checkpoint holds (EfficientFormerV2's
        bias gathers) rebuilt: transformers builds the model on the meta device and fills saved tensors only."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if hasattr(module, "rebuild_index"):
                module.rebuild_index()
        return loaded

    @property
    def efficientformer_model(self) -> _ours.EfficientFormerPreTrainedModel:
        """Our model (the same weights): `save_pretrained`, `forward_features`, `forward_intermediates`, timm's API."""
        return self._inner

    def forward(self, pixel_values: Any = None, labels: Any = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **_: Any):
        """Our class's forward: `logits` (B, num_labels) and `loss` when `labels` are given (backbone: the tokens)."""
        extra = {} if labels is None else {"labels": labels}
        self._inner.config.problem_type = self.config.problem_type  # the loss follows transformers' config
        return self._inner(pixel_values, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, return_dict=return_dict, **extra)


class EfficientFormerModel(EfficientFormerPreTrainedModel):
    """The backbone (`last_hidden_state`: the normalized tokens) as a transformers `PreTrainedModel`."""

    _our_class = _ours.EfficientFormerModel


class EfficientFormerForImageClassification(EfficientFormerPreTrainedModel):
    """Backbone + one linear head as a transformers `PreTrainedModel` (`AutoModelForImageClassification`)."""

    _our_class = _ours.EfficientFormerForImageClassification


class EfficientFormerForImageClassificationWithTeacher(EfficientFormerPreTrainedModel):
    """Backbone + class and distillation heads as a transformers `PreTrainedModel`; `logits` is their mean."""

    _our_class = _ours.EfficientFormerForImageClassificationWithTeacher


class EfficientFormerV2PreTrainedModel(EfficientFormerPreTrainedModel):
    """The V2 wrappers' base: the V2 config, our V2 classes inside."""

    config_class = EfficientFormerV2Config


class EfficientFormerV2Model(EfficientFormerV2PreTrainedModel):
    """The EfficientFormerV2 backbone (`last_hidden_state`: the normalized map) as a transformers `PreTrainedModel`."""

    _our_class = _ours_v2.EfficientFormerV2Model


class EfficientFormerV2ForImageClassification(EfficientFormerV2PreTrainedModel):
    """EfficientFormerV2 with one linear head as a transformers `PreTrainedModel`."""

    _our_class = _ours_v2.EfficientFormerV2ForImageClassification


class EfficientFormerV2ForImageClassificationWithTeacher(EfficientFormerV2PreTrainedModel):
    """EfficientFormerV2 with class and distillation heads as a transformers `PreTrainedModel`; `logits` is their mean."""

    _our_class = _ours_v2.EfficientFormerV2ForImageClassificationWithTeacher


# each model_type with its config and (backbone, single head, two heads) wrappers
_FAMILIES = {
    EfficientFormerConfig.model_type: (EfficientFormerConfig, EfficientFormerModel, EfficientFormerForImageClassification,
                                       EfficientFormerForImageClassificationWithTeacher),
    EfficientFormerV2Config.model_type: (EfficientFormerV2Config, EfficientFormerV2Model,
                                         EfficientFormerV2ForImageClassification,
                                         EfficientFormerV2ForImageClassificationWithTeacher),
}


class EfficientFormerImageProcessor(BaseImageProcessor):
    """transformers' image-processor interface around our `EfficientFormerImageProcessor`: the same settings,
    the same `preprocessor_config.json` and the same `pixel_values` (Pillow-exact resize)."""

    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("image_processor_type", None)
        processor_class = kwargs.get("processor_class", kwargs.get("_processor_class"))
        self.__dict__["_impl"] = _OurProcessor(**kwargs)
        super().__init__()
        self._processor_class = processor_class

    def __getattr__(self, name: str) -> Any:
        impl = self.__dict__.get("_impl")
        if impl is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(impl, name)

    @property
    def efficientformer_processor(self) -> _OurProcessor:
        """Our processor (the one that computes)."""
        return self._impl

    def preprocess(self, images: Any, return_tensors: Any = None, **kwargs: Any) -> _HFBatchFeature:
        """Our `preprocess` (same arguments), as a transformers `BatchFeature` (`.to(device or dtype)` works)."""
        if return_tensors is not None and not isinstance(return_tensors, str):
            return_tensors = getattr(return_tensors, "value", return_tensors)
        out = self._impl.preprocess(images, return_tensors=return_tensors, **kwargs)
        return _HFBatchFeature(data=dict(out))

    def __call__(self, images: Any = None, *args: Any, **kwargs: Any) -> _HFBatchFeature:
        return self.preprocess(images, *args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = self._impl.to_dict()
        if data.get("_processor_class") is None:  # the file then matches ours key for key
            data.pop("_processor_class", None)
        data["image_processor_type"] = type(self).__name__
        return data


def type_is_free(model_type: str = MODEL_TYPE) -> bool:
    """Whether transformers has no `model_type` of its own by that name ("efficientformer": transformers 5;
    "efficientformer_v2": every version), or ours holds it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        owner = CONFIG_MAPPING[model_type]
    except KeyError:
        return True
    return owner is _FAMILIES[model_type][0]


def register() -> bool:
    """Register our wrappers with transformers' Auto classes for the model types "efficientformer" and
    "efficientformer_v2" where transformers has none of its own; returns whether "efficientformer" is ours
    (False with transformers 4.x, which owns it; "efficientformer_v2" is registered there too).

    Afterwards `AutoModelForImageClassification.from_pretrained(folder_or_hub_id)`, `AutoImageProcessor`,
    `pipeline("image-classification", model=...)` and `Trainer` work on released checkpoints and our folders.
    Calling it again is harmless.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for model_type, (config, backbone, single, teacher) in _FAMILIES.items():
        if not type_is_free(model_type):
            logger.info("transformers %s has its own %s classes; ours are not registered with it (they work as "
                        "before without transformers' Auto API).", transformers.__version__, model_type)
            continue
        if model_type in CONFIG_MAPPING:  # registered before: nothing to do
            continue
        AutoConfig.register(model_type, config)
        AutoModel.register(config, backbone)
        if TRANSFORMERS_5:
            # both heads, as transformers 4 mapped them: config.architectures picks one (the released
            # checkpoints are WithTeacher)
            AutoModelForImageClassification.register(config, (single, teacher))
            AutoImageProcessor.register(config, image_processor_classes={"pil": EfficientFormerImageProcessor,
                                                                         "torchvision": EfficientFormerImageProcessor})
        else:  # transformers 4 (for "efficientformer_v2"): one class per Auto class, a "slow" processor
            AutoModelForImageClassification.register(config, teacher)
            AutoImageProcessor.register(config, slow_image_processor_class=EfficientFormerImageProcessor)
        logger.info("registered %s with transformers %s's Auto classes.", model_type, transformers.__version__)
    return type_is_free(MODEL_TYPE)


__all__ = [
    "EfficientFormerConfig", "EfficientFormerPreTrainedModel", "EfficientFormerModel",
    "EfficientFormerForImageClassification", "EfficientFormerForImageClassificationWithTeacher",
    "EfficientFormerImageProcessor", "register", "type_is_free", "EfficientFormerV2Config",
    "EfficientFormerV2PreTrainedModel", "EfficientFormerV2Model", "EfficientFormerV2ForImageClassification",
    "EfficientFormerV2ForImageClassificationWithTeacher",
]
