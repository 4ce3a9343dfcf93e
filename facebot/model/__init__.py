"""Networks: the streaming transformer (temporal, depth and codec transformers), the Moshi-class
language model, configs, safetensors checkpoint import, sampling, the Mimi codec.

Modules are imported on use (``from facebot.model.lm import LMModel``); importing the package
itself loads nothing heavy.
"""
