"""Teachers for distillation: one of our models, a timm model, or a checkpoint file.

`load_teacher(spec, num_labels)` accepts:

* a folder written by `save_pretrained`, a hub id, or a weights file (`.safetensors`, `.bin`, `.pth`)
  of an EfficientFormer -> our model, loaded with `from_pretrained`;
* `l1`, `l3`, `l7` -> the released ImageNet weights of that preset (1000 classes);
* `timm:NAME` -> `timm.create_model(NAME, pretrained=True)`;
  `timm:NAME=PATH` -> the same architecture with weights from PATH (a timm checkpoint).

The teacher runs in eval mode without gradients on the same (augmented, normalized) batch as the student;
its class count must equal the student's.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, require


def load_teacher(spec: str, num_labels: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build and load the teacher named by `spec` (see the module docstring), frozen, on `device`.

    Raises:
        ConfigError: the teacher predicts another number of classes than the student.
        CheckpointError / MissingDependencyError: the weights or timm cannot be found.
    """
    if spec.startswith("timm:"):
        timm = require("timm", "train", "a timm teacher")
        name, _, path = spec[5:].partition("=")
        if path:
            model = timm.create_model(name, pretrained=False, num_classes=num_labels)
            try:
                model.load_state_dict(_read_state_dict(path, model.state_dict()))
            except RuntimeError as err:
                detail = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
                raise ConfigError(f"the teacher checkpoint {path} does not fit timm's {name} with {num_labels} "
                                  f"classes ({detail}); distil from a teacher trained on the student's "
                                  "classes.") from None
        else:
            model = timm.create_model(name, pretrained=True)
        classes = getattr(model, "num_classes", None)
    else:
        from ..factory import create_model

        # a preset name is its released checkpoint; a checkpoint is the class its heads make it
        model = create_model(spec, pretrained=True)
        if not hasattr(model, "classifier"):
            from ..errors import CheckpointError

            raise CheckpointError(f"the teacher {spec} is a backbone without a classification head; distil from a "
                                  "classifier.")
        classes = model.config.num_labels
    if classes is not None and classes != num_labels:
        raise ConfigError(f"the teacher {spec} predicts {classes} classes but the student has {num_labels}; "
                          "distil from a teacher fine-tuned on the same labels.")
    return freeze(model).to(device)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Put `model` in eval mode and turn off its gradients (in place); returns it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _read_state_dict(path: str, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a timm checkpoint for a model whose state dict is `own`, read as every weights file is:
    no pickled code runs, and a zip bomb, a NaN tensor (it would make every loss NaN) or an integer tensor
    where the model has a float weight (load_state_dict would cast it silently) is refused in one sentence."""
    from ..checkpoints.reading import check_tensors, read_state_dict
    from ..errors import CheckpointError

    state = read_state_dict(path)
    check_tensors(state, source=path, efficientformer=False)
    for key, tensor in state.items():
        if key in own and own[key].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"{path}: {key} is stored as {str(tensor.dtype).replace('torch.', '')} but the "
                                  "model's weight is floating point; the file is corrupt or was altered.")
    return state
