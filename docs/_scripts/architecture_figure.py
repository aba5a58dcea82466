"""Draw the architecture figure of the docs (docs/assets/architecture.svg) from the L1 configuration.

Every block and tensor shape comes from `EfficientFormerConfig.from_preset("l1")` at 224x224, so the
picture follows the code. Run `python docs/_scripts/architecture_figure.py` after changing it;
tests/test_docs.py checks that the committed SVG is current.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "assets" / "architecture.svg"

WIDTH = 820
BOX_X, BOX_W = 40, 470
SHAPE_X = 540
COLORS = {  # fill, stroke
    "io": ("#f4f4f5", "#71717a"),
    "stem": ("#e0e7ff", "#4f46e5"),
    "meta4d": ("#dbeafe", "#2563eb"),
    "down": ("#ffedd5", "#ea580c"),
    "meta3d": ("#dcfce7", "#16a34a"),
    "norm": ("#f3e8ff", "#9333ea"),
    "head": ("#fce7f3", "#db2777"),
}


def _rows(config) -> list[tuple[str, str, str, str]]:
    """(kind, title, detail, output shape) from the input to the pooled features."""
    size = config.image_size
    side = size
    for _ in range(2):  # the stem's two stride-2 convolutions
        side = -(-side // 2)
    widths, depths = config.hidden_sizes, config.depths
    rows = [("io", "Image", "pixel_values from EfficientFormerImageProcessor", f"B × 3 × {size} × {size}"),
            ("stem", "Stem (patch_embed)", "2 × (Conv 3×3 stride 2, BatchNorm, ReLU)",
             f"B × {widths[0]} × {side} × {side}")]
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        if stage > 0:
            side = -(-side // 2)
            rows.append(("down", "Downsample", "Conv 3×3 stride 2, BatchNorm", f"B × {width} × {side} × {side}"))
        meta4d = depth - (config.num_meta3d_blocks if stage == len(depths) - 1 else 0)
        stride = size // side
        rows.append(("meta4d", f"Stage {stage + 1}: {meta4d} × Meta4D",
                     f"x += AvgPool(x) − x;  x += ConvMLP(x)  (1×1 convs, ×{config.mlp_expansion_ratio} wide)",
                     f"B × {width} × {side} × {side}   (stride {stride})"))
    tokens = side * side
    heads, key = config.num_attention_heads, config.key_dim
    rows += [
        ("meta3d", "Flatten to tokens", "the 4-D map becomes a sequence", f"B × {tokens} × {widths[-1]}"),
        ("meta3d", f"{config.num_meta3d_blocks} × Meta3D",
         f"x += Attention(LN(x))  ({heads} heads, key {key}, learned bias);  x += MLP(LN(x))",
         f"B × {tokens} × {widths[-1]}"),
        ("norm", "LayerNorm", "EfficientFormerModel's last_hidden_state", f"B × {tokens} × {widths[-1]}"),
        ("norm", "Mean over tokens", "pooled features for the heads", f"B × {widths[-1]}"),
    ]
    return rows


def render() -> str:
    """The SVG text of the figure."""
    sys.path.insert(0, str(ROOT / "src"))
    from efficientformer.config import EfficientFormerConfig

    config = EfficientFormerConfig.from_preset("l1")
    rows = _rows(config)
    box_h, gap, top = 46, 18, 64
    height = top + (len(rows) + 2) * (box_h + gap) - gap + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
           f'height="{height}" font-family="Helvetica, Arial, sans-serif" role="img" '
           f'aria-label="EfficientFormer-L1 architecture at 224x224">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#52525b"/></marker></defs>',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           '<text x="40" y="30" font-size="19" font-weight="bold" fill="#18181b">EfficientFormer-L1 at 224 × 224</text>',
           f'<text x="{SHAPE_X}" y="52" font-size="13" font-weight="bold" fill="#52525b">output shape</text>']
    y = top
    centre = BOX_X + BOX_W / 2
    for index, (kind, title, detail, shape) in enumerate(rows):
        fill, stroke = COLORS[kind]
        out.append(f'<rect x="{BOX_X}" y="{y}" width="{BOX_W}" height="{box_h}" rx="8" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="1.5"/>')
        out.append(f'<text x="{BOX_X + 14}" y="{y + 19}" font-size="14" font-weight="bold" fill="#18181b">'
                   f'{escape(title)}</text>')
        out.append(f'<text x="{BOX_X + 14}" y="{y + 37}" font-size="12" fill="#3f3f46">{escape(detail)}</text>')
        out.append(f'<text x="{SHAPE_X}" y="{y + 28}" font-size="13" fill="#18181b" '
                   f'font-family="Menlo, Consolas, monospace">{escape(shape)}</text>')
        if index < len(rows) - 1:
            out.append(f'<line x1="{centre}" y1="{y + box_h}" x2="{centre}" y2="{y + box_h + gap - 1}" '
                       'stroke="#52525b" stroke-width="1.5" marker-end="url(#arrow)"/>')
        y += box_h + gap
    # the two heads side by side, and their mean
    labels = config.num_labels
    head_w = (BOX_W - 20) / 2
    fill, stroke = COLORS["head"]
    for i, (title, detail) in enumerate([("classifier", f"Linear {config.hidden_sizes[-1]} → {labels}"),
                                         ("distillation_classifier", f"Linear {config.hidden_sizes[-1]} → {labels}")]):
        x = BOX_X + i * (head_w + 20)
        out.append(f'<line x1="{centre}" y1="{y - gap}" x2="{x + head_w / 2}" y2="{y - 1}" stroke="#52525b" '
                   'stroke-width="1.5" marker-end="url(#arrow)"/>')
        out.append(f'<rect x="{x}" y="{y}" width="{head_w}" height="{box_h}" rx="8" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="1.5"/>')
        out.append(f'<text x="{x + 12}" y="{y + 19}" font-size="14" font-weight="bold" fill="#18181b">{title}</text>')
        out.append(f'<text x="{x + 12}" y="{y + 37}" font-size="12" fill="#3f3f46">{escape(detail)}</text>')
    out.append(f'<text x="{SHAPE_X}" y="{y + 28}" font-size="13" fill="#18181b" '
               f'font-family="Menlo, Consolas, monospace">2 × B × {labels}</text>')
    y += box_h + gap
    for i in range(2):
        x = BOX_X + i * (head_w + 20) + head_w / 2
        out.append(f'<line x1="{x}" y1="{y - gap}" x2="{centre}" y2="{y - 1}" stroke="#52525b" '
                   'stroke-width="1.5" marker-end="url(#arrow)"/>')
    fill, stroke = COLORS["io"]
    out.append(f'<rect x="{BOX_X}" y="{y}" width="{BOX_W}" height="{box_h}" rx="8" fill="{fill}" '
               f'stroke="{stroke}" stroke-width="1.5"/>')
    out.append(f'<text x="{BOX_X + 14}" y="{y + 19}" font-size="14" font-weight="bold" fill="#18181b">logits</text>')
    out.append(f'<text x="{BOX_X + 14}" y="{y + 37}" font-size="12" fill="#3f3f46">mean of the two heads '
               '(ForImageClassification has the first only)</text>')
    out.append(f'<text x="{SHAPE_X}" y="{y + 28}" font-size="13" fill="#18181b" '
               f'font-family="Menlo, Consolas, monospace">B × {labels}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
