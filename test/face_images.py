"""Test images and clips of a real face, made from scikit-image's astronaut portrait (the only
face photograph the test machines have; nothing is downloaded), with known changes of pose."""
from __future__ import annotations

import cv2
import numpy as np


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # 512x512 RGB, one face looking at the lens


def rotated(img: np.ndarray, degrees: float, centre=None) -> np.ndarray:
    """In-plane rotation, counter-clockwise as seen on screen for positive ``degrees``."""
    h, w = img.shape[:2]
    c = centre if centre is not None else (w / 2.0, h / 2.0)
    m = cv2.getRotationMatrix2D(c, degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def scaled(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)


def shifted(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


def brightness(img: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def on_canvas(img: np.ndarray, width: int, height: int, x: int, y: int, fill: int = 90) -> np.ndarray:
    """``img`` pasted at (x, y) on a plain canvas (a person in a wider room)."""
    out = np.full((height, width, 3), fill, np.uint8)
    h, w = img.shape[:2]
    out[y:y + h, x:x + w] = img[: height - y, : width - x]
    return out


def cartoon_face(size: int = 400) -> np.ndarray:
    """A drawn smiley: round head, two eyes, a mouth (not a photograph)."""
    img = np.full((size, size, 3), 235, np.uint8)
    c = size // 2
    cv2.circle(img, (c, c), int(size * 0.35), (250, 210, 60), -1)
    for dx in (-1, 1):
        cv2.circle(img, (c + dx * size // 8, c - size // 12), size // 22, (20, 20, 20), -1)
    cv2.ellipse(img, (c, c + size // 12), (size // 7, size // 12), 0, 10, 170, (20, 20, 20), 6)
    return img


def roll_clip(frames: int = 15, max_deg: float = 20.0) -> list[np.ndarray]:
    """A short clip: the head rolls from 0 to ``max_deg`` (counter-clockwise on screen)."""
    img = astronaut()
    return [rotated(img, max_deg * i / (frames - 1)) for i in range(frames)]
