"""Exports of a trained run: ONNX (fp32, int8) and the one-file web page."""
