"""Export the trained detector to ONNX and TensorRT."""
