"""``elman.keras.callbacks``: elman's callbacks, which take Keras' arguments (``monitor``,
``patience``, ``restore_best_weights``, ``save_best_only``, ...). ``ModelCheckpoint`` writes
:func:`elman.save` files, which :func:`elman.keras.models.load_model` reads."""
from ..callbacks import (Callback, CSVLogger, EarlyStopping, History, LearningRateScheduler,
                         ModelCheckpoint, TensorBoard)

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LearningRateScheduler", "TensorBoard"]
