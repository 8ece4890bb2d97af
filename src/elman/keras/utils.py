"""``elman.keras.utils``: ``pad_sequences`` (Keras' defaults: pre-padding, pre-truncation, id 0),
``set_random_seed`` and ``clear_session``."""
from ..data.text import pad_sequences
from ._base import clear_session, set_random_seed

__all__ = ["pad_sequences", "set_random_seed", "clear_session"]
