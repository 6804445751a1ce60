"""Vigil model store: versioned ONNX models with verifiable manifests."""
