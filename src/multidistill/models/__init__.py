"""Backbones, task heads, the multi-task Transformer model and the BiLSTM student."""

from multidistill.models.bilstm import BiLSTMModel, BiLSTMSpec
from multidistill.models.loading import load_model
from multidistill.models.multitask import MultiTaskModel, MultiTaskOutput

__all__ = ["BiLSTMModel", "BiLSTMSpec", "MultiTaskModel", "MultiTaskOutput", "load_model"]
