"""Training multi-task teachers (and, later, ensembles of them)."""
