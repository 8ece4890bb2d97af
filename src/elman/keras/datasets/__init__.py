"""``elman.keras.datasets``: ``imdb.load_data`` as Keras has it."""
from . import imdb

__all__ = ["imdb"]
