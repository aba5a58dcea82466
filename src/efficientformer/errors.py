"""The exceptions the library raises on bad input: each says what is wrong and how to fix it."""


class ConfigError(ValueError):
    """An inconsistent or unknown configuration value."""


class CheckpointError(ValueError):
    """A weights file that is missing, corrupt, unsafe to read, or does not fit the model."""


class InputError(ValueError):
    """Images, tensors or labels the model cannot take (shape, channels, dtype, range)."""


class MissingDependencyError(ImportError):
    """An optional dependency (a backend or a tool) is not installed."""


def require(module: str, extra: str, purpose: str):
    """Import `module` or raise one clear error naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose}: {module.split('.')[0]!r} is not installed; install the {extra!r} extra "
            f"(pip install -e '.[{extra}]' in the efficientformer checkout)  ({err})."
        ) from None
