"""Lazy imports of optional dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise `ImportError` naming the extra that installs it.

    Raises:
        ImportError: The dependency is not installed (message: ``pip install 'buttress[extra]'``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is required for this buttress feature; install it with "
            f"`pip install 'buttress[{extra}]'` (or `pip install {package or module}`)"
        ) from exc
