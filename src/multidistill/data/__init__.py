"""Tasks, readers, the example store and the multi-task batch sampler."""
