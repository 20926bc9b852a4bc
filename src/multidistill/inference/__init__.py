"""Batch prediction on files of texts, with a saved model folder or an ONNX export."""

from multidistill.inference.predict import predict_file, read_table

__all__ = ["predict_file", "read_table"]
