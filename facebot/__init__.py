"""facebot: a full-duplex talking and listening face for social robots (ROS 2 + standalone)."""

__version__ = "0.1.0"
