"""The error every converter raises for what it cannot express exactly."""
from __future__ import annotations

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """A model (or one of its layers) has no exact counterpart in the target framework.

    The message names the layer (its position in a container and its type) and says why.
    """
