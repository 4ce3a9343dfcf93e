"""FLAME -> robot head: actuator commands for ros2_control (limits, lead, watchdog, e-stop),
the calibration of the FLAME-to-joint map, and the face display's renderers. ROS-free; the
nodes wrap these. Modules are imported on use (``facebot.robot.head_controller``)."""
