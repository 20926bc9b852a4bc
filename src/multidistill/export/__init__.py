"""Export saved models for serving: ONNX graphs (fp32 and dynamic int8, checked against PyTorch on real data)
and plain Hugging Face folders."""
