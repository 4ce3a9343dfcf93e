"""Camera images in the encodings robots publish -> one ``[H, W, 3]`` uint8 RGB array.

ROS-free: takes the fields of a sensor_msgs/Image (``encoding, height, width, step, data``) or
the ``format, data`` of a CompressedImage, so the nodes, the bag reader and the tests share
one converter. Supported raw encodings: rgb8, bgr8, rgba8, bgra8, mono8, yuv422 (ROS's name
for UYVY) and yuv422_yuy2 (YUYV); compressed: whatever OpenCV decodes (jpeg, png).
Malformed input raises ``ImageError`` with one line saying what is wrong.
"""
from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "yuv422": 2, "uyvy": 2,
            "yuv422_yuy2": 2, "yuyv": 2}
MAX_PIXELS = 100_000_000  # 10k x 10k: anything larger is refused before it is allocated


class ImageError(ValueError):
    """An image that cannot be used; ``str()`` is one line."""


def raw_to_rgb(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """A sensor_msgs/Image's fields -> RGB (a copy; the message buffer is not kept)."""
    import cv2

    enc = str(encoding).lower()
    ch = CHANNELS.get(enc)
    if ch is None:
        raise ImageError(f"image encoding {encoding!r} not supported ({', '.join(CHANNELS)})")
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ImageError(f"image is empty ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"image of {w}x{h} is larger than {MAX_PIXELS} pixels")
    if ch == 2 and w % 2:
        raise ImageError(f"{enc} image needs an even width, got {w}")
    if step < w * ch:
        raise ImageError(f"image step {step} is below width x channels = {w * ch}")
    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
    if buf.shape[0] < h * step:
        raise ImageError(f"image data has {buf.shape[0]} bytes, expected {h * step}")
    img = np.ascontiguousarray(buf[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch))
    code = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
            "mono8": cv2.COLOR_GRAY2RGB, "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
            "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2}.get(enc)
    return cv2.cvtColor(img, code) if code is not None else img


def compressed_to_rgb(data, fmt: str = "") -> np.ndarray:
    """A CompressedImage's bytes (jpeg, png, ...) -> RGB."""
    import cv2

    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
    if buf.size == 0:
        raise ImageError("compressed image is empty")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"compressed image ({fmt or 'unknown format'}, {buf.size} bytes) cannot be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def msg_to_rgb(msg) -> np.ndarray:
    """Either message type (duck-typed: Image has ``encoding``, CompressedImage ``format``)."""
    if hasattr(msg, "encoding"):
        return raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    return compressed_to_rgb(msg.data, getattr(msg, "format", ""))
