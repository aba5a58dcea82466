"""One way to build any EfficientFormer, as torchvision's `get_model` and timm's `create_model`.

`create_model(name_or_path)` takes a preset name (`"l1"`, `"l3"`, `"l7"`, `"efficientformer-l1"`, and
EfficientFormerV2's `"s0"`, `"s1"`, `"s2"`, `"l"`, `"efficientformerv2_s0"`: random weights, explicitly;
`pretrained=True` loads the preset's released checkpoint instead), a folder, a weights file or a hub id
(loaded), an `EfficientFormerConfig` or `EfficientFormerV2Config` (random weights of that shape) or a loaded
`Checkpoint`. The class follows the checkpoint's heads (`model_class_for`: both heads -> WithTeacher, one ->
the classifier, none -> the backbone) unless `task` names it; `backend="keras"` builds the TF classes.
Convert, export, bench, train, predict and the Keras side all build their models here.

Importing this module needs neither torch nor TensorFlow; each backend is imported when a model is built.

Example:
    >>> from efficientformer import create_model, list_models
    >>> list_models()
    ['l1', 'l3', 'l7', 's0', 's1', 's2', 'l']
    >>> model = create_model("l1", task="classification", num_labels=10)  # doctest: +SKIP
    >>> model = create_model("snap-research/efficientformer-l1-300")  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import TYPE_CHECKING, Any, Iterable

from .constants import CLASS_HEAD, DISTILLATION_HEAD, HUB_KEYWORDS
from .errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoints.loading import Checkpoint
    from .config import EfficientFormerConfig

BACKENDS = ("torch", "keras")
# task (and its other names) -> the class that does it, as named in both backends (Keras adds "TF")
TASK_ALIASES = {"backbone": "backbone", "features": "backbone", "classification": "classification",
                "distillation": "distillation", "with-teacher": "distillation"}
CLASS_NAMES = {"backbone": "EfficientFormerModel", "classification": "EfficientFormerForImageClassification",
               "distillation": "EfficientFormerForImageClassificationWithTeacher"}
# EfficientFormerV2's classes: the V1 names with "V2" after the family name
CLASS_NAMES_V2 = {task: name.replace("EfficientFormer", "EfficientFormerV2", 1) for task, name in CLASS_NAMES.items()}
# a preset built without a task is the class of the released checkpoints
PRESET_TASK = "distillation"
# keyword arguments of create_model that reach the checkpoint reader rather than the config
_LOAD_KEYWORDS = (*HUB_KEYWORDS, "allow_training_args")


# ---------------------------------------------------------------------------------------- the registry
def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """The preset names `create_model` builds (`fnmatch` `pattern`); with `pretrained=True` only those with
    released weights (`presets.WEIGHTS`)."""
    from .presets import V2_VARIANTS, V2_WEIGHTS, VARIANTS, WEIGHTS

    released = {**WEIGHTS, **V2_WEIGHTS}
    return [name for name in [*VARIANTS, *V2_VARIANTS]
            if fnmatch.fnmatch(name, pattern) and (not pretrained or name in released)]


def preset_name(name: Any) -> str | None:
    """The preset key ("l1", ..., V2's "s0", ...) that `name` denotes, or None: a path that exists is a path,
    not a preset."""
    from .presets import V2_VARIANTS, VARIANTS, _v2_key

    if not isinstance(name, (str, os.PathLike)) or os.path.exists(name):
        return None
    key = os.fspath(name).lower().replace("efficientformer-", "").replace("efficientformer_", "")
    if key in VARIANTS:
        return key
    key = _v2_key(os.fspath(name))
    return key if key in V2_VARIANTS else None


def config_from_json(path: str | os.PathLike):
    """The config in a `config.json` file, of the family its `model_type` names (V1 when it names none)."""
    from .config import MODEL_TYPE_V2, read_json_object

    data = read_json_object(path)
    if data.get("model_type") == MODEL_TYPE_V2:
        from .config_v2 import EfficientFormerV2Config

        return EfficientFormerV2Config.from_dict(data)
    from .config import EfficientFormerConfig

    return EfficientFormerConfig.from_dict(data)


def preset_config(preset: str, overrides: dict[str, Any]):
    """The config of a preset key of either family."""
    from .presets import V2_VARIANTS

    if preset in V2_VARIANTS:
        from .config_v2 import EfficientFormerV2Config

        return EfficientFormerV2Config.from_preset(preset, **overrides)
    from .config import EfficientFormerConfig

    return EfficientFormerConfig.from_preset(preset, **overrides)


# ------------------------------------------------------------------------------------ class of a model
def task_of(task: str) -> str:
    """The canonical task ("backbone", "classification", "distillation") of a task name or alias."""
    if task not in TASK_ALIASES:
        raise ConfigError(f"task {task!r} is not known; choose one of {', '.join(TASK_ALIASES)}.")
    return TASK_ALIASES[task]


def task_for(keys: Iterable[str]) -> str:
    """The task whose heads the weight names hold (any backend's names: `classifier.weight`, `classifier/kernel`):
    both heads -> "distillation", the class head -> "classification", none -> "backbone"."""
    tops = {re.split(r"[./]", key, maxsplit=1)[0] for key in keys}
    if DISTILLATION_HEAD in tops:
        return "distillation"
    return "classification" if CLASS_HEAD in tops else "backbone"


def architecture_for(keys: Iterable[str]) -> str:
    """The transformers class name (`config.json`'s `architectures`) of weights with these names."""
    return CLASS_NAMES[task_for(keys)]


def model_class_for(state_dict: Iterable[str] = (), *, task: str | None = None, backend: str = "torch",
                    v2: bool | None = None) -> type:
    """The model class for `task`, else for the heads the weight names of `state_dict` hold (see `task_for`).

    Args:
        state_dict: a state dict or its keys (transformers layout, or Keras weight names).
        task: "backbone"/"features", "classification" or "distillation"/"with-teacher"; wins over the heads.
        backend: "torch" (the PyTorch classes) or "keras" (the TF classes).
        v2: an EfficientFormerV2 class; None: whichever family the weight names are of.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not known; choose one of {', '.join(BACKENDS)}.")
    keys = list(state_dict)
    if v2 is None:
        from .checkpoints.keys_v2 import is_v2_keys

        v2 = is_v2_keys(keys)
    name = (CLASS_NAMES_V2 if v2 else CLASS_NAMES)[task_of(task) if task is not None else task_for(keys)]
    import efficientformer  # the public names, whichever module of the backend defines them

    return getattr(efficientformer, "TF" + name if backend == "keras" else name)


# ------------------------------------------------------------------------------------- random weights
def randomize_(model, seed: int = 0):
    """Give every weight and statistic of a PyTorch model a random, realistic value (in place; returns it),
    seeded without touching torch's global generator, so that a wrong key mapping or a folding error shows
    (the constructor leaves layer scales at 1e-5 and every normalization at identity, under which it would
    not): conv/linear weights ~ N(0, 1/fan_in), BatchNorm/LayerNorm affines ~ 1 + N(0, 0.2), other biases
    ~ N(0, 0.1), running means ~ N(0, 0.1), running variances ~ U(0.5, 1.5), layer scales ~ U(0.05, 0.55),
    attention biases ~ N(0, 1)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            shape = tensor.shape
            if "layer_scale" in name:
                value = torch.rand(shape, generator=gen) * 0.5 + 0.05
            elif "attention_biases" in name:
                value = torch.randn(shape, generator=gen)
            elif tensor.ndim == 1 and "norm" in name:
                value = (1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(shape, generator=gen)
            elif tensor.ndim == 1:
                value = 0.1 * torch.randn(shape, generator=gen)
            else:
                value = torch.randn(shape, generator=gen) / tensor[0].numel() ** 0.5
            tensor.copy_(value)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=gen))
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
    return model


# -------------------------------------------------------------------------------------------- the factory
def create_model(name_or_path: "str | os.PathLike | EfficientFormerConfig | Checkpoint", *, task: str | None = None,
                 pretrained: bool | None = None, backend: str = "torch", seed: int | None = None,
                 ignore_mismatched_sizes: bool = False, **config_overrides: Any):
    """Build an EfficientFormer model, in eval mode.

    Args:
        name_or_path: a preset name ("l1", "l3", "l7", "efficientformer-l1", see `list_models`; a path that
            exists wins over a preset of the same name), a folder, weights file or hub id (any layout
            `load_checkpoint` reads), an `EfficientFormerConfig`, or a loaded `Checkpoint`.
        task: the class: "backbone"/"features" (`EfficientFormerModel`), "classification"
            (`EfficientFormerForImageClassification`) or "distillation"/"with-teacher" (`...WithTeacher`).
            None: the class the checkpoint's heads make it; for presets and configs the WithTeacher class.
        pretrained: for a preset, False (the default) gives random weights and True loads its released
            checkpoint (`presets.WEIGHTS`, through the hub and its cache). For a checkpoint, None or True
            loads its weights and False builds its architecture with random weights.
        backend: "torch" (PyTorch classes) or "keras" (the TF classes).
        seed: random weights only (PyTorch): None keeps the constructor's initialization (torch's global
            generator, as for training); an int gives every weight and statistic a realistic random value
            from that seed (`randomize_`), the same on every call, for benchmarks and export trials.
        ignore_mismatched_sizes: loading only: re-initialize heads whose shape differs (a new `num_labels`).
        **config_overrides: config fields to change (`num_labels=10`, `image_size=256`, ...), and for loading
            `revision`, `cache_dir`, `local_files_only`, `token`, `allow_training_args`.

    Raises:
        ConfigError: an unknown task, backend or preset setting; CheckpointError: unreadable weights.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not known; choose one of {', '.join(BACKENDS)}.")
    if task is not None:
        task = task_of(task)
    if seed is not None and backend != "torch":
        raise InputError("seed= randomizes PyTorch weights only; leave it out for backend='keras'.")
    load = {k: config_overrides.pop(k) for k in _LOAD_KEYWORDS if k in config_overrides}
    from .checkpoints.loading import Checkpoint
    from .config import LabelledConfig

    if isinstance(name_or_path, LabelledConfig):  # either family's config
        return _random(name_or_path.copy(**config_overrides), task, backend, seed)
    if isinstance(name_or_path, Checkpoint):
        return _loaded(name_or_path, task, backend, ignore_mismatched_sizes, config_overrides)
    preset = preset_name(name_or_path)
    if preset is not None and not pretrained:
        return _random(preset_config(preset, config_overrides), task, backend, seed)
    if preset is not None:
        from .presets import V2_WEIGHTS, WEIGHTS

        released = {**WEIGHTS, **V2_WEIGHTS}
        if preset not in released:
            raise ConfigError(f"preset {preset!r} has no released weights; pass pretrained=False for random ones.")
        name_or_path = released[preset].hub_id
    if backend == "keras":
        return _loaded_keras(os.fspath(name_or_path), task, pretrained, load, config_overrides)
    from .checkpoints.loading import load_checkpoint

    checkpoint = load_checkpoint(name_or_path, **load)
    if pretrained is False:  # the checkpoint's architecture and heads, with new weights
        config = checkpoint.config.copy(**config_overrides)
        return _random(config, task or task_for(checkpoint.state_dict), backend, seed)
    return _loaded(checkpoint, task, backend, ignore_mismatched_sizes, config_overrides)


def _random(config: "EfficientFormerConfig", task: str | None, backend: str, seed: int | None):
    from .checkpoints.loading_v2 import is_v2_config

    model = model_class_for(task=task or PRESET_TASK, backend=backend, v2=is_v2_config(config))(config)
    if backend == "keras":
        return model
    return (randomize_(model, seed) if seed is not None else model).eval()


def _loaded(checkpoint: "Checkpoint", task: str | None, backend: str, ignore_mismatched_sizes: bool,
            overrides: dict[str, Any]):
    """A PyTorch model with the checkpoint's weights and preprocessing (the Keras classes read files)."""
    if backend == "keras":
        raise InputError("a loaded Checkpoint builds PyTorch models; give its path for backend='keras'.")
    from .checkpoints.loading_v2 import is_v2_config

    config = checkpoint.config.copy(**overrides) if overrides else checkpoint.config
    model = model_class_for(checkpoint.state_dict, task=task, v2=is_v2_config(config))(config)
    model.load_pretrained_state_dict(checkpoint.state_dict, ignore_mismatched_sizes=ignore_mismatched_sizes)
    model.processor_settings = checkpoint.processor
    return model.float().eval()


def _loaded_keras(name: str, task: str | None, pretrained: bool | None, load: dict, overrides: dict[str, Any]):
    """A Keras model from a folder, file or hub id; its class from the heads of the weights found there."""
    if pretrained is False:
        raise InputError("backend='keras' builds random weights from a preset or a config only; pass "
                         "EfficientFormerConfig.from_pretrained(path) for the checkpoint's shape.")
    load.pop("allow_training_args", None)
    names = _weight_names(name, load)
    model_class = model_class_for(names, task=task, backend="keras")  # the family and heads the weights have
    return model_class.from_pretrained(name, **load, **overrides)


def _weight_names(name: str, hub: dict) -> list[str]:
    """The weight names of the file the Keras classes would load (`tf_model.h5`, else PyTorch weights)."""
    from .checkpoints import h5

    path, is_pt = h5.find_weights_file(name, **hub)
    if not is_pt:
        return list(h5.read_h5(path))
    from .checkpoints.loading import load_checkpoint

    return list(load_checkpoint(name, **hub).state_dict)
