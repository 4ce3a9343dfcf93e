"""Streaming steps as pure functions of (inputs, state) -> (outputs, state), with every cache an
explicit static-shape tensor (the form ONNX / TensorRT export needs): ``lm_step`` (temporal +
depth transformer with the acoustic delays), ``face_lm_step``; the codecs stream through their own
``encode_step`` / ``decode_step``.
"""
