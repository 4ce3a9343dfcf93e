"""Writes one session's outputs into a folder: WAVs, the FLAME track, a rosbag2 MCAP.

Everything is written into ``<out>.partial`` and renamed to ``<out>`` only when the session
ends cleanly, so a folder that exists under its final name is always complete; a failed
session leaves nothing behind. With ``replace`` (``--force``, checked by
``facebot.io.outputs.check_replaceable``) an earlier output is swapped out only then.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from facebot import interfaces
from facebot.audio.files import write_wav
from facebot.audio.framing import FRAME_NS, MODEL_RATE
from facebot.bagio import BagRecorder
from facebot.face.flame import FlameTrack
from facebot.io.atomic import atomic_write_text
from facebot.io.outputs import publish
from facebot.pipeline import head as head_io
from facebot.pipeline.duplex import StepResult
from facebot.pipeline.head import HeadDriver

TOPICS = {
    "/audio/in": "facebot/msg/AudioChunk",
    "/audio/out": "facebot/msg/AudioChunk",
    "/face/flame": "facebot/msg/FlameParams",
    "/dialogue/state": "facebot/msg/DialogueState",
}
IMAGE_TOPIC = "/camera/image_raw/compressed"
USER_FLAME_TOPIC = "/face/user_flame"  # the user's perceived face on the model's clock


class SessionRecorder:
    def __init__(self, out_dir: str | Path, backend: str, with_video: bool = False,
                 head: HeadDriver | None = None, renderer=None, deterministic: bool = False,
                 plot: bool = True, replace: bool = False) -> None:
        """``head`` adds joint commands (CSV + bag topics); ``renderer`` (FLAME -> RGB) adds
        the face-display video; ``plot`` the session.png."""
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not replace:
            raise FileExistsError(f"{self.out_dir}: output folder already exists")
        self.partial = self.out_dir.with_name(self.out_dir.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        self.backend = backend
        self.with_video = with_video
        topics = dict(TOPICS)
        if with_video:
            topics[IMAGE_TOPIC] = "sensor_msgs/msg/CompressedImage"
            topics[USER_FLAME_TOPIC] = "facebot/msg/FlameParams"
        if head is not None:
            topics.update(head_io.TOPICS)
        self.head = head
        self.renderer = renderer
        self.deterministic = deterministic
        self.plot = plot
        self._commands = []
        self._csv = None
        self.bag = BagRecorder(self.partial / "bag", topics)
        self.bag.__enter__()
        self._user: list[np.ndarray] = []
        self._robot: list[np.ndarray] = []
        self._flame = []
        self._words: list[tuple[float, str]] = []
        self._t0_ns: int | None = None
        self._lead_samples = 0
        self._last_image_stamp: int | None = None

    def add(self, r: StepResult) -> None:
        if self._t0_ns is None:
            self._t0_ns = r.capture_stamp_ns
            # Output frame 0 is heard this long after input frame 0 was captured.
            self._lead_samples = int(round((r.audio_stamp_ns - r.capture_stamp_ns) * MODEL_RATE / 1e9))
        if self.head is not None:
            self._add_commands(self.head.advance(r, now_ns=r.capture_stamp_ns + FRAME_NS))
        self._user.append(r.user_audio)
        self._robot.append(r.robot_audio)
        self._flame.extend(r.flame)
        if r.output.text:
            self._words.append(((r.audio_stamp_ns - self._t0_ns) / 1e9, r.output.text))
        w = self.bag.write
        w("/audio/in", r.capture_stamp_ns, interfaces.audio_to_msg(r.user_audio, MODEL_RATE, r.capture_stamp_ns, frame_id="microphone"))
        w("/audio/out", r.audio_stamp_ns, interfaces.audio_to_msg(r.robot_audio, MODEL_RATE, r.audio_stamp_ns, frame_id="speaker"))
        for f in r.flame:
            w("/face/flame", f.stamp_ns, interfaces.flame_to_msg(f, frame_id="face"))
        if self.with_video and r.user_flame:
            for f in r.user_flame:
                w(USER_FLAME_TOPIC, f.stamp_ns, interfaces.flame_to_msg(f, frame_id="user_face"))
        w("/dialogue/state", r.audio_stamp_ns, interfaces.dialogue_state_msg(
            int(r.state), r.audio_stamp_ns,
            user_speaking=r.user.speaking, robot_speaking=r.output.speaking, barge_in=r.output.barge_in,
            backchannel=r.output.backchannel, user_speech_prob=min(max(r.user.speech_prob, 0.0), 1.0),
            text=r.output.text, step_latency_ms=0.0 if self.deterministic else r.timings_ms.get("step", 0.0),
            backend=self.backend,
        ))

    def _add_commands(self, commands) -> None:
        if not commands:
            return
        if self._csv is None:
            self._csv = open(self.partial / "joints.csv", "w")
            self._csv.write(head_io.csv_header(self.head.controller.joint_names))
        self._csv.write(head_io.csv_rows(commands, self._t0_ns))
        for topic, stamp, msg in head_io.command_messages(commands, self.head.controller):
            self.bag.write(topic, stamp, msg)
        self._commands.extend(commands)

    def add_image(self, rgb: np.ndarray, stamp_ns: int) -> None:
        """Records a camera frame once (JPEG), the first time the loop uses it."""
        if stamp_ns == self._last_image_stamp:
            return
        import cv2

        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return
        cls = interfaces.msg_class("sensor_msgs/msg/CompressedImage")
        msg = cls(header=interfaces.make_header(stamp_ns, "camera"), format="jpeg", data=np.frombuffer(jpeg.tobytes(), np.uint8))
        self.bag.write(IMAGE_TOPIC, stamp_ns, msg)
        self._last_image_stamp = stamp_ns

    @property
    def frames(self) -> int:
        return len(self._user)

    def finish(self, summary: dict) -> Path:
        """Writes the files, closes the bag and publishes the folder under its final name."""
        self.bag.__exit__(None, None, None)
        user = np.concatenate(self._user) if self._user else np.zeros(0, np.float32)
        robot = np.concatenate([np.zeros(self._lead_samples, np.float32)] + self._robot)
        n = max(user.shape[0], robot.shape[0])
        user_full = np.pad(user, (0, n - user.shape[0]))
        robot_full = np.pad(robot, (0, n - robot.shape[0]))
        write_wav(self.partial / "robot.wav", robot_full, MODEL_RATE)
        write_wav(self.partial / "user.wav", user_full, MODEL_RATE)
        write_wav(self.partial / "conversation.wav", np.stack([user_full, robot_full], axis=1), MODEL_RATE)
        track = FlameTrack.from_frames(self._flame)
        track.save_npz(self.partial / "flame.npz")
        if self._csv is not None:
            self._csv.close()
        if self.plot:
            self._write_plot(robot_full, user_full, track)
        if self.renderer is not None:
            from facebot.pipeline.media import frames_on_grid, write_face_video

            count = int(np.ceil(n / MODEL_RATE * 25))
            write_face_video(self.partial / "face.mp4", frames_on_grid(self._flame, self._t0_ns, count),
                             self.renderer, robot_full, MODEL_RATE)
        (self.partial / "transcript.txt").write_text(
            "".join(f"{t:8.2f}  {text}\n" for t, text in self._words)
        )
        summary = {**summary, "t0_ns": self._t0_ns, "frames": self.frames, "flame_frames": len(self._flame),
                   "robot_lead_samples": self._lead_samples, "bag_counts": dict(self.bag.counts)}
        if self.head is not None:
            summary["head"] = {"lead_ms": self.head.lead_ms, "commands": len(self._commands),
                               "timeline_restarts": self.head.timeline_restarts,
                               "counters": dict(self.head.controller.counters)}
        atomic_write_text(self.partial / "summary.json", json.dumps(summary, indent=2))
        return publish(self.partial, self.out_dir)

    def _write_plot(self, robot, user, track: FlameTrack) -> None:
        from facebot.pipeline.plots import plot_session

        t = (track.stamp_ns - self._t0_ns) / 1e9
        kwargs = {}
        if self._commands:
            names = list(self.head.controller.joint_names)
            pos = np.stack([c.positions for c in self._commands])
            kwargs = dict(
                command_t_s=np.array([(c.stamp_ns - self._t0_ns) / 1e9 for c in self._commands]),
                command_jaw=pos[:, names.index("jaw")] if "jaw" in names else None,
                command_neck={n: pos[:, names.index(n)] for n in names if n.startswith("neck_")},
                lead_s=self.head.lead_ms / 1000.0,
            )
        plot_session(self.partial / "session.png", robot, user, MODEL_RATE, t, track.jaw_pose[:, 0],
                     track.neck_pose, **kwargs)

    def abort(self) -> None:
        """Drops everything written so far: no half-finished folder is left behind."""
        if self._csv is not None:
            self._csv.close()
        try:
            self.bag.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except Exception:  # the bag is being thrown away anyway
            pass
        shutil.rmtree(self.partial, ignore_errors=True)
