"""Streaming steps as pure functions of (inputs, state) -> (outputs, state), with every cache an
explicit static-shape tensor (the form ONNX / TensorRT export needs): ``lm_step`` (temporal +
depth transformer with the acoustic delays), ``codec_step`` (Mimi).
"""
