"""`facebot eval`: how the robot converses, measured from what was heard and shown.

ROS-free. ``inputs`` loads a run folder, a rosbag2 or a stereo WAV onto one heard timeline;
``segments`` finds speech with silero-vad; ``turns`` and ``face`` compute the duplex and
face metrics; ``report`` and ``plot`` present them; ``scenarios`` makes and scores the
benchmark situations.
"""
