"""IR → ONNX: the only package that imports `onnx`."""
