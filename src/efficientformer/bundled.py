"""The model and images shipped inside the package.

The default model is a small EfficientFormer trained with `efficientformer train` on Fashion-MNIST
(94.03% top-1 on its 10,000 test images; command and curves in `benchmarks/results/training.md`), and
the sample images are ten of those test images, one per class, named by their true class.

Example:
    >>> from efficientformer.bundled import default_model_path, sample_images_path
    >>> sorted(p.name for p in __import__("pathlib").Path(sample_images_path()).iterdir())[:2]
    ['ankle-boot.png', 'bag.png']
"""

from __future__ import annotations

from importlib import resources


def default_model_path() -> str:
    """Folder of the bundled model (config.json, model.safetensors, preprocessor_config.json)."""
    return str(resources.files(__package__).joinpath("data", "default-model"))


def sample_images_path() -> str:
    """Folder of the bundled sample images (Fashion-MNIST test images as PNG)."""
    return str(resources.files(__package__).joinpath("data", "sample-images"))
