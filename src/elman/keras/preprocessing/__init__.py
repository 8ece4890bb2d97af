"""Keras 2's ``keras.preprocessing`` (``from keras.preprocessing import sequence``)."""
from . import sequence

__all__ = ["sequence"]
