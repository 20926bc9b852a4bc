"""The one training loop, its objective and its checkpoints."""
