"""Griffe extension: read a docstring's `Example:` section as an examples section.

The project's docstrings head their doctest examples `Example:` (singular). Google-style parsing in
griffe only knows `Examples:`, and would render the `>>>` lines as Markdown quotes; this extension
renames the heading when griffe loads each object, so the examples render as highlighted code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class SingularExamples(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
