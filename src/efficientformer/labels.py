"""Class names: the 1000 ImageNet-1k descriptions shipped with the package."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

_GENERIC = re.compile(r"^LABEL_\d+$")


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions in index order."""
    text = resources.files(__package__).joinpath("data", "imagenet-1k-labels.json").read_text(encoding="utf-8")
    return tuple(json.loads(text))


def imagenet_id2label() -> dict[int, str]:
    return dict(enumerate(imagenet_labels()))


def has_generic_labels(id2label: dict[int, str]) -> bool:
    """True when every name is the placeholder `LABEL_n` that a config without names carries."""
    return all(_GENERIC.match(str(name)) for name in id2label.values())


def with_known_names(id2label: dict[int, str]) -> dict[int, str]:
    """Give a 1000-class model with placeholder names the ImageNet names; otherwise keep the names."""
    if len(id2label) == 1000 and has_generic_labels(id2label):
        return imagenet_id2label()
    return dict(id2label)
