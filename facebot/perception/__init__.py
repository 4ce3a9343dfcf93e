"""Seeing the user: camera images -> faces (MediaPipe) -> the user's FLAME frames, the face
stream the model reads, and where the robot should look.

Sits between ``pipeline/`` and ``robot/`` in the layers: it uses the robot's filters, the
calibration fitter and the head's URDF, and the face's FLAME contract; nothing in it imports
ROS.
"""
