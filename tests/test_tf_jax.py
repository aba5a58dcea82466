"""The same Keras classes under KERAS_BACKEND=jax give the TensorFlow backend's outputs.

Keras fixes its backend at import, so the JAX side runs in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.tf

JAX_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from efficientformer.models.keras import TFEfficientFormerForImageClassificationWithTeacher as Model
    folder, inputs, out = sys.argv[1:4]
    model = Model.from_pretrained(folder)
    results = {}
    for key, pixels in np.load(inputs).items():
        output = model(pixels, output_hidden_states=True, output_attentions=True)
        results[key + ".logits"] = np.asarray(output.logits)
        results[key + ".tokens"] = np.asarray(output.hidden_states[-1])
        results[key + ".attention"] = np.asarray(output.attentions[-1])
    np.savez(out, **results)
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_matches_tensorflow(fixtures_dir, tmp_path):
    tf = pytest.importorskip("tensorflow")  # noqa: F841
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference side needs KERAS_BACKEND=tensorflow")
    from efficientformer.models.keras import TFEfficientFormerForImageClassificationWithTeacher as Model

    folder = fixtures_dir / "hf-tiny"
    inputs = {
        "trained_size": np.load(folder / "expected.npz")["pixel_values"],
        "96x160": np.random.default_rng(0).standard_normal((2, 3, 96, 160)).astype("float32"),
    }
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(folder), str(tmp_path / "inputs.npz"),
                          str(tmp_path / "jax.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    jax_results = np.load(tmp_path / "jax.npz")

    model = Model.from_pretrained(folder)
    for key, pixels in inputs.items():
        output = model(pixels, output_hidden_states=True, output_attentions=True)
        for name, value in [("logits", output.logits), ("tokens", output.hidden_states[-1]),
                            ("attention", output.attentions[-1])]:
            np.testing.assert_allclose(jax_results[f"{key}.{name}"], np.asarray(value), rtol=0, atol=1e-5,
                                       err_msg=f"{key} {name}")
