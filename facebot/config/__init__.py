"""Settings: what every component may be told, with units and ranges, checked once at load.

``schema`` validates, ``files`` reads YAML, and one module per area holds its settings
dataclasses; :mod:`facebot.config.pipeline` is the whole pipeline's configuration that the
CLI and the ROS nodes fill.
"""
from facebot.config.files import CONFIG_DIR, load_yaml, section
from facebot.config.schema import ConfigError, Settings, from_mapping, setting

__all__ = ["CONFIG_DIR", "ConfigError", "Settings", "from_mapping", "load_yaml", "section", "setting"]
