"""MkDocs hook: fill the generated parts of the pages from the code and the repository at build time.

A page asks for generated content with an HTML comment on a line of its own:

- `<!-- generated: cli-reference -->`: the `--help` of `efficientformer` and of every command, from
  `efficientformer.cli.build_parser()` (never copied by hand, so it cannot drift from the parsers).
- `<!-- generated: variants-table -->`: L1/L3/L7 and V2's S0/S1/S2/L shapes and sizes from
  `efficientformer.presets` (`VARIANTS`, `WEIGHTS`, `V2_VARIANTS`, `V2_WEIGHTS`).
- `<!-- generated: weights-table -->`: where the released checkpoints live, from `presets.WEIGHTS` and `V2_WEIGHTS`.
- `<!-- generated: include PATH -->`: a Markdown file of the repository (e.g. `BENCHMARKS.md`) with its
  headings moved two levels down and its links to files outside the site turned into plain text.

The same functions are used by `tests/test_docs.py`, which checks the tables against the data.
"""

from __future__ import annotations

import io
import os
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

_MARKER = re.compile(r"^<!-- generated: ([\w-]+)(?: (\S+))? -->$", re.MULTILINE)


# ------------------------------------------------------------------------------------------ tables
def variants_table() -> str:
    """Markdown table of the paper's variants: shape, parameters, GMACs, accuracy, latency."""
    from efficientformer.presets import V2_VARIANTS, V2_WEIGHTS, VARIANTS, WEIGHTS

    rows = ["| Variant | Depths | Widths | Attention blocks | Parameters | GMACs | Top-1 | iPhone 12 |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    # V1: Meta3D blocks of the last stage; V2: attention blocks at the end of each of stages 3 and 4
    families = ((VARIANTS, WEIGHTS, "", "num_meta3d_blocks"), (V2_VARIANTS, V2_WEIGHTS, "V2-", "num_attention_blocks"))
    for variants, weights, label, attention in families:
        for name, v in variants.items():
            w = weights[name]
            rows.append(f"| {label}{name.upper()} | {'-'.join(map(str, v.depths))} "
                        f"| {'-'.join(map(str, v.hidden_sizes))} | {getattr(v, attention)} | {v.num_parameters:,} "
                        f"| {w.gmacs} | {w.top1} % | {w.mobile_latency_ms} ms |")
    return "\n".join(rows)


def weights_table() -> str:
    """Markdown table of where each released checkpoint lives in the three formats."""
    from efficientformer.presets import V2_WEIGHTS, WEIGHTS

    rows = ["| Variant | transformers hub id | timm model id | original release file | top-1 |",
            "|---|---|---|---|---:|"]
    for name, w in WEIGHTS.items():
        rows.append(f"| {name.upper()} | [`{w.hub_id}`](https://huggingface.co/{w.hub_id}) "
                    f"| [`{w.timm_id}`](https://huggingface.co/timm/{w.timm_id}) | `{w.original_file}` "
                    f"| {w.top1} % |")
    for name, w in V2_WEIGHTS.items():  # transformers never had V2: timm's folder is the hub copy, read directly
        rows.append(f"| V2-{name.upper()} | (none: `{w.hub_id}` loads as it is) "
                    f"| [`{w.timm_id}`](https://huggingface.co/timm/{w.timm_id}) | `{w.original_file}` "
                    f"| {w.top1} % |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------- the CLI
def cli_reference() -> str:
    """`--help` of the program and of each command, as Markdown sections."""
    from efficientformer.cli import COMMANDS, build_parser

    old_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # stable wrapping that fits the page, whatever the terminal
    try:
        parser = build_parser()
        commands = parser._subparsers._group_actions[0].choices  # name -> sub-parser
        parts = ["## `efficientformer`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name in COMMANDS:
            sub = commands[name]
            parts += [f"## `efficientformer {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if old_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_columns


# ------------------------------------------------------------------------------------ repo files
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def include(path: str) -> str:
    """A repository Markdown file, headings demoted by two, links outside the site made plain text."""
    file = ROOT / path
    if not file.is_file():
        return (f'!!! note "Not measured yet"\n    `{path}` is not in this checkout yet; the figures appear '
                "here once it is.")
    text = file.read_text(encoding="utf-8")

    def heading(match: re.Match) -> str:
        return "#" * min(len(match.group(1)) + 2, 6) + " "

    text = re.sub(r"^(#{1,6}) ", heading, text, flags=re.MULTILINE)

    def link(match: re.Match) -> str:
        bang, label, target = match.groups()
        if target.startswith(("http://", "https://", "#", "mailto:")):
            return match.group(0)
        if bang:  # a picture of the repository (e.g. a plot) is not part of the site
            return f"*({label or 'figure'}: `{target}` in the repository)*"
        return f"{label} (`{target}` in the repository)"

    return _LINK.sub(link, text)


_GENERATORS = {
    "cli-reference": lambda arg: cli_reference(),
    "variants-table": lambda arg: variants_table(),
    "weights-table": lambda arg: weights_table(),
    "include": include,
}


def expand(markdown: str) -> str:
    """Replace every generated-content marker of a page."""
    def replace(match: re.Match) -> str:
        kind, arg = match.groups()
        if kind not in _GENERATORS:
            raise ValueError(f"unknown generated block {kind!r}; known: {', '.join(_GENERATORS)}")
        with redirect_stdout(io.StringIO()):
            return _GENERATORS[kind](arg)

    return _MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs hook signature
    return expand(markdown)
