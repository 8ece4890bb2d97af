"""The task commands behind `elman forecast`, `elman classify` and `elman generate`."""
