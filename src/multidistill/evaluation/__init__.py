"""Metrics and evaluation of multi-task models on dev sets."""
