"""The one writer of model folders: `config.json`, the weight files and `preprocessor_config.json`,
swapped in at once.

`save_pretrained` (PyTorch and Keras), `convert` and the training export all write through
`write_model_folder`, so that every saved model has the same files, the same atomicity (a kill leaves the
old model or the new one; `efficientformer.fileio.write_folder`) and the same checks before any byte is
written (bad processor settings fail first).

Example:
    >>> from safetensors.torch import save_file  # doctest: +SKIP
    >>> write_model_folder("my-model", config=config,  # doctest: +SKIP
    ...                    weights={SAFETENSORS_NAME: lambda path: save_file(state, path)},
    ...                    processor=None)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..constants import CONFIG_NAME

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EfficientFormerConfig
    from ..preprocessing.processor import EfficientFormerImageProcessor

# A writer gets the path of the file to create (inside the temporary folder) and writes it there.
Writer = Callable[[str], Any]
# `processor=DEFAULT`: the released checkpoints' preprocessing; `processor=None`: no preprocessor file.
DEFAULT = "released"


def processor_for(processor: Any = DEFAULT) -> "EfficientFormerImageProcessor | None":
    """An `EfficientFormerImageProcessor` from one, from its settings (a dict), or from `DEFAULT` (the
    released checkpoints' preprocessing, `presets.RELEASED_PREPROCESSING`); None stays None.

    Raises:
        ConfigError: settings the processor does not accept.
    """
    if processor is None:
        return None
    from ..preprocessing.processor import EfficientFormerImageProcessor

    if isinstance(processor, EfficientFormerImageProcessor):
        return processor
    if isinstance(processor, str) and processor == DEFAULT:
        from ..presets import RELEASED_PREPROCESSING

        processor = RELEASED_PREPROCESSING
    return EfficientFormerImageProcessor.from_dict(dict(processor))


def write_model_folder(folder: str | os.PathLike, *, config: "EfficientFormerConfig | Mapping[str, Any]",
                       weights: Mapping[str, Writer], processor: Any = DEFAULT) -> str:
    """Write a model folder atomically and return its path.

    Args:
        folder: created if needed; a model already there is replaced whole (its other weight files go, so no
            stale `.bin` or `tf_model.h5` stays beside new weights); files that are not model files stay.
        config: an `EfficientFormerConfig` (written as transformers' `config.json`) or a plain mapping
            (written as it is, e.g. timm's `config.json`).
        weights: file name -> writer; each writer is called with the path to create, e.g.
            `{"model.safetensors": lambda path: save_file(state, path)}`.
        processor: an `EfficientFormerImageProcessor`, its settings, `DEFAULT` (the released checkpoints'
            preprocessing) or None (no `preprocessor_config.json`). Checked before anything is written.

    Raises:
        InputError: a weights name that is not a plain file name (see also `fileio.write_folder`).
        ConfigError: invalid processor settings.
        WriteError: the folder cannot be written (`fileio.write_folder`).
    """
    from ..errors import InputError
    from ..fileio import write_folder, write_json

    for name in weights:
        if not name or os.path.basename(name) != name or name in (".", ".."):
            raise InputError(f"weights file name {name!r} is not a plain file name; give names such as "
                             "'model.safetensors'.")
    processor = processor_for(processor)  # bad settings fail before anything is written
    with write_folder(folder) as tmp:
        if isinstance(config, Mapping):
            write_json(tmp / CONFIG_NAME, dict(config))
        else:
            config.save_pretrained(tmp)
        for name, writer in weights.items():
            writer(os.path.join(tmp, name))
        if processor is not None:
            processor.save_pretrained(tmp)
    return os.fspath(folder)
