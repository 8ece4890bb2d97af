"""``elman.keras.backend.clear_session()``: layer names start again from ``simple_rnn``."""
from ._base import clear_session

__all__ = ["clear_session"]
