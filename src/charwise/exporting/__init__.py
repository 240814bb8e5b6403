"""Exports of a trained run, to run it outside charwise: formats.py declares them (FORMATS:
ONNX and the one-file web page, the quantizations each takes); command.py is `charwise export`
and charwise.export, dispatching through it; onnx.py and web.py write them (onnxquant.py: fp16
and int8 ONNX graphs); losscheck.py measures and bounds what quantizing costs.

This package's __init__ imports nothing: settings/options.py imports formats.py (Python
imports this file first), and must stay torch-free.
"""
