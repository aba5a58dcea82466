"""The documentation site builds strictly and every example in it runs.

- `mkdocs build --strict` into a temporary folder (skipped when mkdocs is not installed:
  `pip install -e '.[docs]'`).
- Every ```python and ```bash block of each page under docs/ runs, in page order, in one fresh
  subprocess per page (Python blocks share one namespace, as a reader pasting them in order would),
  in a scratch folder holding real photos (`photos/`, from ../shared/fixtures/images). A block is
  skipped only when an HTML comment on the line before it says so:
  `<!-- docs-test: skip REASON -->` (e.g. it installs packages), or
  `<!-- docs-test: needs MODULE[,MODULE...] -->` (runs only when those modules import; `cuda` means
  a CUDA GPU), or `<!-- docs-test: slow needs MODULE... -->` (also only with
  `EFFICIENTFORMER_DOCS_SLOW=1`: the TensorFlow, JAX and TFLite examples, which take a minute of CPU
  to trace and convert L1 while the TF tests of the suite already cover the same calls).
- The released L1 checkpoint is replaced by stand-ins with the real architecture and random weights,
  in all three formats: its hub ids (`snap-research/efficientformer-l1-300`,
  `timm/efficientformer_l1.snap_dist_in1k`) resolve offline (`HF_HUB_OFFLINE=1`) from a hub cache
  the test writes, and `efficientformer_l1_300d.pth` lies in the scratch folder. Examples so exercise
  the real code paths without a network (their predictions are meaningless and not asserted).
- README.md's blocks run the same way (one subprocess, in order). Its stand-ins are smaller: the same hub ids
  and release file hold the timm-small fixture (~100 k weights), so its conversion and export examples take
  seconds. Its set-up commands are the two CI runs, and no install line in it
  names the package as if it were on PyPI or lets pip replace torch (nor in the docs pages).
- The generated tables and the architecture figure agree with the code that produces them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_hooks"))
sys.path.insert(0, str(DOCS / "_scripts"))

import api_fallback  # noqa: E402
import generated  # noqa: E402

PAGES = sorted(p for p in DOCS.rglob("*.md") if not any(part.startswith("_") for part in p.relative_to(DOCS).parts))
_FENCE = re.compile(r"^([ \t]*)```(python|bash)[^\n]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!-- docs-test: (skip|needs|slow needs) ?(.*?) -->\s*$")
SLOW = os.environ.get("EFFICIENTFORMER_DOCS_SLOW", "") == "1"
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png")


# ----------------------------------------------------------------------------------- code blocks
def code_blocks(page: Path) -> list[tuple[str, str, int, str | None]]:
    """(language, code, first line number of the code, reason to skip or None) for each block."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start(3)) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        reason = None
        if mark and mark.group(1) == "skip":
            reason = mark.group(2) or "marked skip"
        elif mark:
            missing = [m for m in mark.group(2).replace(" ", "").split(",") if not _available(m)]
            reason = f"needs {', '.join(missing)}" if missing else None
            if reason is None and mark.group(1) == "slow needs" and not SLOW:
                reason = "slow: runs with EFFICIENTFORMER_DOCS_SLOW=1"
        blocks.append((match.group(2), textwrap.dedent(match.group(3)), line, reason))
    return blocks


def _available(module: str) -> bool:
    if module == "cuda":
        try:
            import torch
        except ImportError:
            return False
        return torch.cuda.is_available()
    return importlib.util.find_spec(module) is not None


def _section(text: str, line: int) -> str:
    """The `## ` heading a line of a Markdown page falls under ("" before the first)."""
    headings = [h for h in text.splitlines()[:line] if h.startswith("## ")]
    return headings[-1][3:].strip() if headings else ""


def page_script(page: Path, sections: tuple[str, ...] | None = None) -> tuple[str, list[str]]:
    """A Python script running the page's blocks in order (only those under `## ` headings starting with one of
    `sections`, when given), and the skip reasons of skipped blocks."""
    rel = page.relative_to(ROOT).as_posix()
    text = page.read_text(encoding="utf-8")
    lines = ["import os, subprocess, sys, time", "ns = {'__name__': '__main__'}", "start = time.perf_counter()"]
    skipped = []
    for language, code, line, reason in code_blocks(page):
        if sections is not None and not _section(text, line).startswith(sections):
            continue
        if reason is not None:
            skipped.append(f"{rel}:{line} ({reason})")
            continue
        lines.append(f"print({f'=== {rel}:{line}'!r}, f'(at {{time.perf_counter() - start:.1f}} s)', flush=True)")
        if language == "python":
            padded = "\n" * (line - 1) + code  # tracebacks point at the line of the Markdown file
            lines.append(f"exec(compile({padded!r}, {rel!r}, 'exec'), ns)")
        else:
            lines.append(f"subprocess.run(['bash', '-euo', 'pipefail', '-c', {code!r}], check=True)")
    return "\n".join(lines) + "\n", skipped


def _snapshot(cache: Path, hub_id: str) -> Path:
    """The snapshot folder of `hub_id` in the hub cache `cache` (its refs/main written; the folder not)."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    revision = hashlib.sha1(hub_id.encode()).hexdigest()  # any 40-hex commit id
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def _stand_in_checkpoints(base: Path) -> tuple[Path, Path]:
    """The released L1 checkpoint's three forms with random weights (no network needed).

    Returns the hub cache (holding `snap-research/efficientformer-l1-300` in the transformers layout and
    `timm/efficientformer_l1.snap_dist_in1k` in timm's) and the original release file
    `efficientformer_l1_300d.pth`.
    """
    import torch

    from efficientformer import EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher
    from efficientformer.presets import WEIGHTS

    torch.manual_seed(0)
    cache, weights = base / "hub", WEIGHTS["l1"]

    def snapshot(hub_id: str) -> Path:
        return _snapshot(cache, hub_id)

    hf_folder = snapshot(weights.hub_id)
    EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.from_preset("l1")).save_pretrained(str(hf_folder))
    original = base / weights.original_file
    if importlib.util.find_spec("efficientformer.checkpoints.conversion") is not None:
        from efficientformer.checkpoints.conversion import convert

        convert(str(hf_folder), str(snapshot(f"timm/{weights.timm_id}")), format="timm", verify=False)
        convert(str(hf_folder), str(original), format="original", verify=False)
    return cache, original


def _run_page(page: Path, base: Path, env: dict, fixtures_dir: Path, original: Path,
              sections: tuple[str, ...] | None = None, name: str = ""):
    """Run the page's examples (or those of `sections`) in a scratch folder; None when it has nothing to run."""
    script, _ = page_script(page, sections)
    if "exec(" not in script and "subprocess.run([" not in script:
        return None
    work = base / (page.relative_to(ROOT).as_posix().replace("/", "_").removesuffix(".md") + name)
    (work / "photos").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(fixtures_dir / "images" / name, work / "photos" / name)
    if original.is_file():
        (work / original.name).symlink_to(original)
    (work / "run_page.py").write_text(script, encoding="utf-8")
    return subprocess.run([sys.executable, "run_page.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory, fixtures_dir):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    base = tmp_path_factory.mktemp("docs")
    cache, original = _stand_in_checkpoints(base)
    return base, _example_env(base, cache), fixtures_dir, original


def _example_env(base: Path, cache: Path) -> dict:
    """The environment the examples run in: offline, the stand-in hub cache, quiet, one thread."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(base / "hf-home"),
               MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""),
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", COLUMNS="100",
               # one thread: examples are not benchmarks, and more threads than cores (the suite runs
               # with pytest-xdist) make PyTorch many times slower
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NO_MKDOCS_2_WARNING="1",  # Material's end-of-life banner
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_page_examples_run(page: Path, docs_env) -> None:
    result = _run_page(page, *docs_env)
    if result is None:
        pytest.skip("no runnable code blocks on this page")
    assert result.returncode == 0, (
        f"an example of {page.relative_to(ROOT)} failed (the traceback names the Markdown line):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")


# transformers 4.57 (which still ships EfficientFormer) beside the suite's 5.x: scripts/test.sh installs it with its
# huggingface_hub 0.x into this folder of the environment, put first on the path of one subprocess
TRANSFORMERS_4 = Path(sys.prefix) / "transformers-4.57"


def test_task_guide_runs_on_transformers_4_57(docs_env):
    """The guide's transformers section (Trainer, Auto classes, pipeline) on transformers 4.57, where transformers'
    own EfficientFormer classes answer the Auto API; the suite's other run of the page uses transformers 5."""
    if not (TRANSFORMERS_4 / "transformers").is_dir():
        pytest.skip(f"transformers 4.57 is not installed in {TRANSFORMERS_4} (scripts/test.sh installs it)")
    base, env, fixtures_dir, original = docs_env
    env = dict(env, PYTHONPATH=os.pathsep.join([str(TRANSFORMERS_4), env.get("PYTHONPATH", "")]),
               USE_TF="0")  # transformers 4 refuses to import beside Keras 3 unless told to leave TensorFlow alone
    page = DOCS / "guides" / "image-classification.md"
    result = _run_page(page, base, env, fixtures_dir, original, sections=("1.", "7."), name="-transformers-4.57")
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    assert "transformers.models.deprecated.efficientformer" in result.stdout  # 4.57's own class loaded the folder
    assert "answer transformers' Auto API: False" in result.stdout


# ------------------------------------------------------------------------------------------ README
README = ROOT / "README.md"


def _tiny_stand_ins(base: Path, fixtures_dir: Path) -> tuple[Path, Path]:
    """The README's checkpoints as the timm-small fixture (~100 k weights): the same code paths as L1, and
    its conversion, ONNX and SavedModel examples take seconds instead of minutes.

    `timm/efficientformer_l1.snap_dist_in1k` is timm-small's timm hub folder, `snap-research/efficientformer-l1-300`
    its transformers conversion, and `efficientformer_l1_300d.pth` its original release file.
    """
    from efficientformer.checkpoints.conversion import convert
    from efficientformer.presets import WEIGHTS

    cache, weights = base / "hub", WEIGHTS["l1"]
    timm_folder = _snapshot(cache, f"timm/{weights.timm_id}")
    shutil.copytree(fixtures_dir / "timm-small" / "hub", timm_folder)
    hf_folder = _snapshot(cache, weights.hub_id)
    hf_folder.parent.mkdir(parents=True)
    convert(str(timm_folder), str(hf_folder), format="hf", verify=False)
    original = base / weights.original_file
    shutil.copy(fixtures_dir / "timm-small" / "original_model.pth", original)
    return cache, original


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory, fixtures_dir):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    base = tmp_path_factory.mktemp("readme")
    cache, original = _tiny_stand_ins(base, fixtures_dir)
    return base, _example_env(base, cache), fixtures_dir, original


def test_readme_examples_run(readme_env) -> None:
    result = _run_page(README, *readme_env)
    assert result.returncode == 0, (
        f"an example of README.md failed (the traceback names the Markdown line):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")


def _readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_setup_is_two_commands_and_ci_runs_the_second() -> None:
    commands = [code.strip() for _, code, _, _ in _blocks_of(_readme_section("Set-up on a fresh machine"))][:2]
    assert commands == ["bash scripts/setup.sh", "bash scripts/test.sh"], commands
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [commands[1]], ci


def _blocks_of(markdown: str) -> list[tuple[str, str, int, str | None]]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "section.md"
        page.write_text(markdown, encoding="utf-8")
        return code_blocks(page)


def bad_install_words(line: str) -> list[str]:
    """The words of a `pip install` line that fail or replace torch.

    The package is not on PyPI (`efficientformer[...]` fails: install the checkout, `.[extra]`); `timm` or
    `torchvision` from the index bring another torch (scripts/install-timm.sh keeps the installed one); an
    unpinned `torch` picks the index's newest build.
    """
    if "pip install" not in line:
        return []
    words = [w.strip("'\"") for w in line.split("#", 1)[0].split("pip install", 1)[1].split()]
    return [w for w in words if w.startswith("efficientformer[") or w in ("timm", "torchvision", "torch")]


@pytest.mark.parametrize("page", [README, *PAGES], ids=["README.md", *(p.relative_to(DOCS).as_posix() for p in PAGES)])
def test_install_lines_install_the_checkout_and_keep_torch(page: Path) -> None:
    text = re.sub(r"^```text\n.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)  # quoted output
    bad = [line.strip() for line in text.splitlines() if bad_install_words(line)]
    assert bad == [], f"{page.name}: these install lines fail (not on PyPI) or replace torch: {bad}"


def test_bad_install_words() -> None:
    assert bad_install_words('pip install "efficientformer[torch]" timm') == ["efficientformer[torch]", "timm"]
    assert bad_install_words("pip install -e '.[tf]' ai-edge-litert   # timm") == []
    assert bad_install_words("pip install torch==2.13.0 && pip install '.[torch]'") == []


# ------------------------------------------------------------------------------------- the build
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "efficientformer-l1-300" in home  # the generated checkpoint table reached the page
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("predict", "convert", "export", "bench", "train", "eval", "info"):
        assert f"efficientformer {command}" in cli


# ---------------------------------------------------------------------------------- generated parts
def test_overview_tables_match_presets() -> None:
    from efficientformer.presets import VARIANTS, WEIGHTS

    variants, weights = generated.variants_table(), generated.weights_table()
    for name, v in VARIANTS.items():
        w = WEIGHTS[name]
        row = next(line for line in variants.splitlines() if line.startswith(f"| {name.upper()} |"))
        assert f"{v.num_parameters:,}" in row and f"| {w.gmacs} |" in row and f"{w.top1} %" in row
        assert "-".join(map(str, v.hidden_sizes)) in row and "-".join(map(str, v.depths)) in row
        assert w.hub_id in weights and w.timm_id in weights and w.original_file in weights
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert "<!-- generated: variants-table -->" in index and "<!-- generated: weights-table -->" in index


def test_cli_reference_covers_every_command() -> None:
    from efficientformer.cli import COMMANDS

    text = generated.cli_reference()
    for name in COMMANDS:
        assert f"## `efficientformer {name}`" in text
    assert "<!-- generated: cli-reference -->" in (DOCS / "cli.md").read_text(encoding="utf-8")


def test_architecture_figure_is_current() -> None:
    import architecture_figure

    assert (DOCS / "assets" / "architecture.svg").read_text(encoding="utf-8") == architecture_figure.render()


def test_architecture_page_maps_every_module_and_is_linked() -> None:
    """docs/architecture.md names each package and module of the tree as it is, draws both flows, and is reachable
    from the README and the site's navigation."""
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "src" / "efficientformer"
    for path in sorted(package.rglob("*.py")):
        if path.name in ("__main__.py", "_version.py"):
            continue
        parts = path.relative_to(package.parent).with_suffix("").parts
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        assert f"`{dotted}`" in page, f"docs/architecture.md does not name {dotted}"
    for flow in (["image", "processor", "model", "heads", "labels"],
                 ["checkpoint file", "format detection", "key table", "state dict", "model"]):
        assert re.search(r"\s*-+>\s*".join(map(re.escape, flow)), page, re.IGNORECASE), flow
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "architecture.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------- API pages
API_CLASSES = {  # every class of transformers' EfficientFormer page, plus our public API
    "config.md": "efficientformer.config.EfficientFormerConfig",
    "image-processor.md": "efficientformer.preprocessing.processor.EfficientFormerImageProcessor",
    "model.md": "efficientformer.models.pytorch.models.EfficientFormerModel",
    "for-image-classification.md": "efficientformer.models.pytorch.models.EfficientFormerForImageClassification",
    "with-teacher.md": "efficientformer.models.pytorch.models.EfficientFormerForImageClassificationWithTeacher",
    "tf-model.md": "efficientformer.models.keras.models.TFEfficientFormerModel",
    "tf-for-image-classification.md": "efficientformer.models.keras.models.TFEfficientFormerForImageClassification",
    "tf-with-teacher.md": "efficientformer.models.keras.models.TFEfficientFormerForImageClassificationWithTeacher",
    "image-classifier.md": "efficientformer.classifier.ImageClassifier",
    "optimize.md": "efficientformer.deploy.optimize.optimize",
    "export.md": "efficientformer.deploy.export.export",
    "errors.md": "efficientformer.errors",
    "presets.md": "efficientformer.presets.VARIANTS",
    "efficientformer-v2.md": "efficientformer.config_v2.EfficientFormerV2Config",
}


@pytest.mark.parametrize("page,target", sorted(API_CLASSES.items()))
def test_api_page_documents_its_object(page: str, target: str) -> None:
    text = (DOCS / "api" / page).read_text(encoding="utf-8")
    assert f"::: {target}\n" in text + "\n"
    reason = api_fallback.missing_reason(target)
    module = target if api_fallback._module_file(target) else target.rpartition(".")[0]
    if reason is not None and api_fallback._module_file(module) is None:
        pytest.skip(f"{reason} (the page shows a placeholder until it lands)")
    assert reason is None, f"docs/api/{page} documents {target}, but {reason}: rename the directive"


def test_pages_are_all_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES:
        assert page.relative_to(DOCS).as_posix() in nav, f"{page} is not in mkdocs.yml's nav"


def test_marker_parsing(tmp_path: Path) -> None:
    sample = textwrap.dedent("""\
        <!-- docs-test: skip installs packages -->
        ```bash
        pip install x
        ```

        ```python
        print(1)
        ```
        """)
    page = tmp_path / "sample.md"
    page.write_text(sample)
    blocks = code_blocks(page)
    assert [(lang, reason) for lang, _, _, reason in blocks] == [("bash", "installs packages"), ("python", None)]
    assert blocks[1][2] == 7
