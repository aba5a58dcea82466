"""Print the version, the backends and optional tools found, and the presets with their released weights."""

from __future__ import annotations

import argparse

HELP = "show the version, installed backends and the L1/L3/L7 presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def _version_of(module: str) -> str:
    import importlib.metadata as md

    for dist in (module, {"tensorflow": "tensorflow-cpu"}.get(module, module)):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "not installed"


def run(args: argparse.Namespace) -> int:
    del args
    from .._version import __version__
    from ..presets import V2_VARIANTS, V2_WEIGHTS, VARIANTS, WEIGHTS

    print(f"efficientformer {__version__}")
    print("backends and tools:")
    for module in ("torch", "tensorflow", "keras", "jax", "timm", "onnxruntime", "safetensors", "huggingface_hub"):
        print(f"  {module:<16} {_version_of(module)}")
    _presets("presets:", "Meta3D", VARIANTS, WEIGHTS, "num_meta3d_blocks")
    _presets("EfficientFormerV2 presets (attention blocks at the end of stages 3 and 4 each):", "attn", V2_VARIANTS,
             V2_WEIGHTS, "num_attention_blocks")
    return 0


def _presets(title: str, blocks: str, variants: dict, weights: dict, blocks_field: str) -> None:
    """One family's presets as a table: shapes, attention blocks, parameters, top-1 and weights."""
    print(title)
    print(f"  {'name':<4} {'depths':<15} {'widths':<20} {blocks:>6} {'params':>11} {'top-1':>6}  weights")
    for name, v in variants.items():
        w = weights[name]
        print(f"  {name:<4} {str(list(v.depths)):<15} {str(list(v.hidden_sizes)):<20} {getattr(v, blocks_field):>6} "
              f"{v.num_parameters:>11,} {w.top1:>6.1f}  {w.hub_id}")
