"""Writes one session's outputs into a folder: WAVs, the FLAME track, a rosbag2 MCAP.

Everything is written as the session runs (the WAVs, joints.csv, the transcript and the bag)
or kept on disk until it ends (the FLAME track, the plot's envelopes and commands), so that
the recorder's memory does not grow with the session's length.

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
import soundfile as sf

from facebot import interfaces
from facebot.audio.framing import MODEL_RATE
from facebot.bagio import BagRecorder
from facebot.io.atomic import atomic_write_text
from facebot.io.outputs import publish
from facebot.pipeline import head as head_io
from facebot.pipeline.duplex import StepResult
from facebot.pipeline.flame_spool import FlameSpool
from facebot.pipeline.head import HeadDriver
from facebot.pipeline.session_audio import SessionAudio, pcm16_ready
from facebot.pipeline.spool import Spool
from facebot.robot.joint_command import JointCommand

TOPICS = {
    "/audio/in": "facebot/msg/AudioChunk",
    "/audio/out": "facebot/msg/AudioChunk",
    "/face/flame": "facebot/msg/FlameParams",
    "/dialogue/state": "facebot/msg/DialogueState",
}
IMAGE_TOPIC = "/camera/image_raw/compressed"
USER_FLAME_TOPIC = "/face/user_flame"  # the user's perceived face on the model's clock
SCRATCH = ".recording"  # inside the partial folder: what is kept on disk until the session ends


class SessionRecorder:
    def __init__(self, out_dir: str | Path, backend: str, with_video: bool = False,
                 head: HeadDriver | None = None, renderer=None, deterministic: bool = False,
                 plot: bool = True, replace: bool = False) -> None:
        """``head`` adds joint commands (CSV + bag topics; the session steps the driver and hands
        its commands to ``add``); ``renderer`` (FLAME -> RGB) adds the face-display video;
        ``plot`` the session.png."""
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not replace:
            raise FileExistsError(f"{self.out_dir}: output folder already exists")
        self.partial = self.out_dir.with_name(self.out_dir.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.scratch = self.partial / SCRATCH
        self.scratch.mkdir(parents=True)
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
        self.commands = 0
        self._csv = None
        # send time (s since t0) and positions of each command, for the plot
        self._command_track = Spool(self.scratch / "commands", np.float64,
                                    (1 + len(head.controller.joint_names),)) if head is not None else None
        self.audio = SessionAudio(self.partial, self.scratch, keep_robot=renderer is not None)
        self.flame = FlameSpool(self.scratch)
        self._transcript = open(self.partial / "transcript.txt", "w")
        self._mic = None  # mic.wav, with a loudspeaker: the microphone before echo cancellation
        self.bag = BagRecorder(self.partial / "bag", topics)
        self.bag.__enter__()
        self.frames = 0
        self._t0_ns: int | None = None
        self._lead_samples = 0
        self._last_image_stamp: int | None = None

    def add(self, r: StepResult, commands: list[JointCommand] = ()) -> None:
        """Records one step and the head's commands ticked up to it."""
        if self._t0_ns is None:
            self._t0_ns = r.capture_stamp_ns
            # Output frame 0 is heard this long after input frame 0 was captured.
            self._lead_samples = int(round((r.audio_stamp_ns - r.capture_stamp_ns) * MODEL_RATE / 1e9))
            self.audio.delay_robot(self._lead_samples)
        self._add_commands(commands)
        self.audio.add(r.user_audio, r.robot_audio)
        self.flame.append(r.flame)
        self.frames += 1
        if r.output.text:
            self._transcript.write(f"{(r.audio_stamp_ns - self._t0_ns) / 1e9:8.2f}  {r.output.text}\n")
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

    def add_mic(self, samples: np.ndarray) -> None:
        """Records a microphone frame as heard, before echo cancellation (mic.wav)."""
        if self._mic is None:
            self._mic = sf.SoundFile(str(self.partial / "mic.wav"), "w", MODEL_RATE, 1, subtype="PCM_16")
        self._mic.write(pcm16_ready(samples))

    def _add_commands(self, commands) -> None:
        if not commands:
            return
        if self._csv is None:
            self._csv = open(self.partial / "joints.csv", "w")
            self._csv.write(head_io.csv_header(self.head.controller.joint_names))
        self._csv.write(head_io.csv_rows(commands, self._t0_ns))
        for topic, stamp, msg in head_io.command_messages(commands, self.head.controller):
            self.bag.write(topic, stamp, msg)
        self._command_track.append([[(c.stamp_ns - self._t0_ns) / 1e9, *c.positions] for c in commands])
        self.commands += len(commands)

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

    def finish(self, summary: dict) -> Path:
        """Writes the files, closes the bag and publishes the folder under its final name."""
        self.bag.__exit__(None, None, None)
        n = self.audio.finish()
        self.flame.save_npz(self.partial / "flame.npz")
        if self._csv is not None:
            self._csv.close()
        self._transcript.close()
        if self.plot:
            self._write_plot()
        if self.renderer is not None:
            from facebot.pipeline.media import grid_indices, write_face_video

            count = int(np.ceil(n / MODEL_RATE * 25))
            frames = self.flame.frames_at(grid_indices(self.flame.field("stamp_ns"), self._t0_ns, count))
            write_face_video(self.partial / "face.mp4", frames, self.renderer, self.audio.robot.keep, MODEL_RATE)
        summary = {**summary, "t0_ns": self._t0_ns, "frames": self.frames, "flame_frames": len(self.flame),
                   "robot_lead_samples": self._lead_samples, "bag_counts": dict(self.bag.counts)}
        if self.head is not None:
            summary["head"] = {"lead_ms": self.head.lead_ms, "commands": self.commands,
                               "timeline_restarts": self.head.timeline_restarts,
                               "counters": dict(self.head.controller.counters)}
        atomic_write_text(self.partial / "summary.json", json.dumps(summary, indent=2))
        self._close_scratch()
        shutil.rmtree(self.scratch)
        return publish(self.partial, self.out_dir)

    def _write_plot(self) -> None:
        from facebot.pipeline.plots import plot_session

        t = (self.flame.field("stamp_ns") - self._t0_ns) / 1e9
        kwargs = {}
        if self.commands:
            names = list(self.head.controller.joint_names)
            shown = [n for n in names if n == "jaw" or n.startswith("neck_")]
            command_t, *columns = self._command_track.columns([0] + [1 + names.index(n) for n in shown])
            commands = dict(zip(shown, columns))
            kwargs = dict(
                command_t_s=command_t,
                command_jaw=commands.get("jaw"),
                command_neck={n: v for n, v in commands.items() if n != "jaw"},
                lead_s=self.head.lead_ms / 1000.0,
            )
        plot_session(self.partial / "session.png", self.audio.robot.envelope.values(),
                     self.audio.user.envelope.values(), t, self.flame.field("jaw_pose")[:, 0],
                     self.flame.field("neck_pose"), **kwargs)

    def _close_scratch(self) -> None:
        for f in (self._csv, self._transcript, self._mic, self._command_track, self.audio, self.flame):
            if f is not None:
                f.close()

    def abort(self) -> None:
        """Drops everything written so far: no half-finished folder is left behind."""
        self._close_scratch()
        try:
            self.bag.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except Exception:  # the bag is being thrown away anyway
            pass
        shutil.rmtree(self.partial, ignore_errors=True)
