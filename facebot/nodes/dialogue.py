# Copyright 2025 facebot maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The full-duplex dialogue as a lifecycle node: user audio in, robot voice and face out.

Wraps the duplex loop that :mod:`facebot.assembly` builds, as the `facebot` command does,
from the pipeline configuration: ``config_file`` with the parameters over it
(``PARAM_SETTINGS``; ranges and choices come from the settings schema).

Lifecycle:

- configure: loads the configuration, builds the backend (loads weights / engine) and the
  loop; creates the publishers and subscriptions.
- activate: starts the step timer; user audio is re-framed by an
  :class:`~facebot.audio.framing.AudioFramer` as it arrives, and each tick steps the frames
  that are ready (at most two, so the loop catches up after a hiccup without bursting).
- deactivate: stops the timer and drops pending audio. cleanup: releases the backend.

Time: an input's stamp is its capture time; output frame *k* is stamped with when it will be
heard: ``capture(k) + 80 ms + playout delay``. The playout delay is the ``playout_delay_ms``
parameter, raised to the head driver's lead plus one face frame (the head publishes its lead
on ``head/lead_ms``, latched, and again whenever it changes), and to what the audio player's
``audio/played`` feedback shows when the sound is heard later. Setting ``playout_delay_ms``
below the head's floor is refused with the reason. FLAME frames and dialogue state carry the
same time base.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time

import numpy as np

from facebot import interfaces
from facebot.assembly import build_backend, build_loop, playout_floor_ms
from facebot.audio.framing import FRAME_NS, MODEL_RATE, AudioFramer
from facebot.audio.pcm import ENCODING_DTYPES
from facebot.config.pipeline import load_pipeline_config, Override, PipelineConfig
from facebot.errors import FacebotError
from facebot.msg import AudioChunk, DialogueState, FlameParams
from facebot.nodes import _common as common
from facebot.nodes._common import Param, setting_param
from facebot.perception.images import msg_to_rgb
from facebot.perception.user_perception import (USER_FLAME_TOPIC, USER_POSITION_TOPIC,
                                                UserPerception)
from facebot.pipeline.duplex import DuplexLoop
from facebot.pipeline.echo_stage import EchoInputStage
from facebot.pipeline.playout import PlayoutTracker
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, String

FRAME_PERIOD_S = FRAME_NS / 1e9  # 0.08 s: one model frame
# A frame is stepped within this long of its last chunk arriving. A timer at the frame rate
# would add 40 ms on average to every answer (measured: bench/bench_ros_graph.py); polling
# at 100 Hz costs a few microseconds per idle tick.
STEP_POLL_S = 0.01
MAX_STEPS_PER_TICK = 2

CONFIG_FILE = Param('config_file', '',
                    'pipeline YAML (sections loop, scripted, model, echo: '
                    "facebot.config.pipeline); empty = the package's facebot.yaml. Its values "
                    "are the other parameters' defaults (read at start-up); the parameters "
                    'override it at every configure')


def params_for(config: PipelineConfig) -> tuple[Param, ...]:
    """The node's parameters; those that set a pipeline setting default to the file's value."""
    def setting(name, key, description, **kw):
        kw.setdefault('default', file_value(config, key))
        return setting_param(name, key, description, **kw)

    return (
        CONFIG_FILE,
        setting('backend', 'backend', 'speech backend: scripted (espeak-ng, rules) or model '
                '(checked at configure)', choices=()),
        Param('script_lines', [''], "scripted backend's reply lines; [''] = the file's lines"),
        Param('weights_path', '', 'model weights (model backends; e.g. a .safetensors file)'),
        Param('engine_path', '',
              'folder of the exported graphs (and TensorRT engines/) for runtime onnxruntime '
              'or tensorrt: one holding an export is started from alone (no torch model; it '
              'must hold the model asked for), an empty one is exported into; '
              "'' = ~/.cache/facebot/graphs/<model>"),
        setting('runtime', 'model.runtime', 'where the model step runs (model backend)'),
        setting('precision', 'model.precision',
                'exported graphs / engines precision (int8, int4: onnxruntime only)'),
        setting('force_engine_update', 'model.force_engine_update',
                're-export the graphs and rebuild the TensorRT engines at configure'),
        setting('model_config', 'model.config',
                'model configuration (tiny, small, moshi-7b or a Kyutai config.json)'),
        setting('temperature', 'model.temperature', 'sampling temperature of model backends',
                live=True),
        setting('top_k', 'model.top_k', 'top-k sampling of model backends (0: all)',
                live=True),
        setting('seed', 'seed', 'random seed of the session (sampling, procedural face)'),
        setting('vad_threshold', 'loop.vad_threshold',
                'speech probability above which the user counts as speaking'),
        setting('vad_echo_threshold', 'loop.vad_echo_threshold',
                "the same while the echo canceller removes the robot's voice (a user talking "
                'over the robot; never above vad_threshold)'),
        setting('playout_delay_ms', 'loop.playout_delay_ms',
                'least time from the end of an input frame to its output being heard (ms); '
                "raised to the head driver's lead + 40 ms (head/lead_ms) so the motors lead "
                'the voice; a value below that is refused',
                live=True, default=max(80.0, config.loop.playout_delay_ms)),
        Param('measure_playout', True,
              "raise the playout delay to what the audio player's audio/played feedback shows",
              live=True),
        Param('max_pending_frames', 4, 'input frames waiting beyond this are dropped (counted)',
              1, 100, live=True),
        Param('max_image_age_s', 1.0, 'a camera image older than this is not passed on',
              0.0, 60.0, live=True),
        Param('output_encoding', 'S16LE', 'sample format of the robot audio',
              choices=tuple(ENCODING_DTYPES), live=True),
        Param('audio_frame_id', 'speaker', 'header.frame_id of the robot audio', live=True),
        Param('face_frame_id', 'face', 'header.frame_id of the FLAME frames', live=True),
        setting('echo_cancellation', 'echo.echo_cancellation',
                "remove the robot's own voice (audio/played) from audio/in before the VAD "
                '(AEC3)', live=True),
        setting('noise_suppression', 'echo.noise_suppression',
                'suppress steady background noise on audio/in', live=True),
        setting('high_pass_filter', 'echo.high_pass_filter',
                'high-pass filter audio/in (rumble, DC)', live=True),
        setting('echo_delay_ms', 'echo.echo_delay_ms',
                'initial guess of the delay from an audio/played stamp to its echo in '
                'audio/in (ms); tracked from then on', live=True),
    )


def file_value(config: PipelineConfig, key: str):
    """The value of dotted ``key`` in ``config``."""
    value = config
    for name in key.split('.'):
        value = getattr(value, name)
    return value


ECHO_PARAMS = ('echo_cancellation', 'noise_suppression', 'high_pass_filter', 'echo_delay_ms')
# parameter -> pipeline setting; '' leaves the config file's value
PARAM_SETTINGS = {
    'backend': 'backend', 'seed': 'seed', 'weights_path': 'model.weights',
    'engine_path': 'model.export_dir', 'runtime': 'model.runtime', 'precision': 'model.precision',
    'force_engine_update': 'model.force_engine_update', 'model_config': 'model.config',
    'temperature': 'model.temperature', 'top_k': 'model.top_k',
    'vad_threshold': 'loop.vad_threshold', 'vad_echo_threshold': 'loop.vad_echo_threshold',
    'playout_delay_ms': 'loop.playout_delay_ms',
    **{name: f'echo.{name}' for name in ECHO_PARAMS},
}


def pipeline_config(params: dict) -> PipelineConfig:
    """The node's pipeline configuration: config_file, then the parameters over it."""
    overrides = [Override(key, params[name], f'parameter {name}')
                 for name, key in PARAM_SETTINGS.items() if params[name] != '']  # '': the file's
    lines = [s for s in params['script_lines'] if s.strip()]
    if lines:
        overrides.append(Override('scripted.replies', lines, 'parameter script_lines'))
    return load_pipeline_config(params['config_file'] or None, overrides)


class DialogueNode(LifecycleNode):
    """Lifecycle node stepping the duplex loop every 80 ms."""

    def __init__(self, **kwargs) -> None:
        super().__init__('dialogue', **kwargs)
        path = common.declare(self, [CONFIG_FILE])['config_file']
        try:  # the file's values become the parameters' defaults
            defaults = load_pipeline_config(path or None)
        except FacebotError as err:
            self.get_logger().fatal(str(err))
            raise
        self.specs = params_for(defaults)
        self.params = common.declare(self, self.specs[1:])
        self.params['config_file'] = path
        self.live = common.LiveParams(self, self.specs, self._apply)
        self.log = common.RateLimitedLog(self.get_logger())
        self.step_group = MutuallyExclusiveCallbackGroup()
        self.input_group = MutuallyExclusiveCallbackGroup()
        self.diag_pub = self.create_publisher(
            common.DiagnosticArray, common.DIAGNOSTICS_TOPIC, 10)
        self.create_timer(common.DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)
        self._lock = threading.Lock()
        self.loop: DuplexLoop | None = None
        self.backend = None
        self.framer: AudioFramer | None = None
        self.timer = None
        self.active = False
        self.pubs: dict = {}
        self.subs: list = []
        self.latency = common.Latency()
        self.counts = collections.Counter()
        self.state_label = 'unconfigured'
        self.error = ''
        self._pending: collections.deque = collections.deque()
        self._image = None  # (rgb array, stamp_ns)
        self.playout = PlayoutTracker()
        self.playout_delay_ns = 0
        self.echo: EchoInputStage | None = None
        self.config: PipelineConfig | None = None
        self.head_lead_ms: float | None = None  # from head/lead_ms, once the head driver is up
        self.create_subscription(Float64, common.HEAD_LEAD, self.on_head_lead,
                                 common.latched_qos(), callback_group=self.input_group)

    def make_executor(self):
        """Steps and input callbacks run in parallel groups (rclpy MultiThreadedExecutor)."""
        return MultiThreadedExecutor(num_threads=3)

    # -- parameters ------------------------------------------------------------------------

    def _apply(self, changes: dict) -> str | None:
        floor = self._playout_floor_ms()
        if 'playout_delay_ms' in changes and changes['playout_delay_ms'] < floor:
            return (f'playout_delay_ms {changes["playout_delay_ms"]} is below the head\'s lead '
                    f'{self.head_lead_ms} ms + one face frame = {floor} ms: the motors could not '
                    'move before the voice (lower lead_ms on the head driver first)')
        sampling = {k: v for k, v in changes.items() if k in ('temperature', 'top_k')}
        update = getattr(self.backend, 'update_options', None)
        if sampling and update is not None:
            update(**sampling)
        elif sampling and self.backend is not None:
            self.get_logger().info(
                f'backend {self.params["backend"]!r} has no live sampling control: '
                f'{", ".join(sampling)} apply at the next configure')
        echo = {k: v for k, v in changes.items() if k in ECHO_PARAMS}
        if echo and self.echo is not None:
            try:
                with self._lock:
                    self.echo.configure(**echo)
            except ValueError as err:
                return str(err)
        self.params.update(changes)
        return None

    def _echo_stage(self) -> EchoInputStage:
        config = dataclasses.replace(self.config.echo, **{k: self.params[k] for k in ECHO_PARAMS})
        return EchoInputStage(config)

    def _fresh_params(self) -> dict:
        return {p.name: self.get_parameter(p.name).value for p in self.specs}

    def _build(self, p: dict):
        self.config = pipeline_config(p)
        backend = build_backend(self.config)
        # the user's face arrives from face_perception (face/user_flame, face/user_position)
        return backend, build_loop(self.config, backend, perception=UserPerception(detect=False))

    # -- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        self.params = self._fresh_params()
        try:
            self.backend, self.loop = self._build(self.params)
        except (FacebotError, ValueError, TypeError, OSError, RuntimeError) as err:
            self.error = f'configure failed: {err}'
            self.get_logger().error(self.error)
            return TransitionCallbackReturn.FAILURE
        self.error = ''
        self.get_logger().info(f'backend: {self.backend.describe()}')
        self.pubs = {
            'audio': self.create_lifecycle_publisher(AudioChunk, common.AUDIO_OUT,
                                                     common.reliable_qos(50)),
            'flame': self.create_lifecycle_publisher(FlameParams, common.FLAME,
                                                     common.reliable_qos(50)),
            'text': self.create_lifecycle_publisher(String, common.DIALOGUE_TEXT,
                                                    common.reliable_qos(10)),
            'state': self.create_lifecycle_publisher(DialogueState, common.DIALOGUE_STATE,
                                                     common.reliable_qos(10)),
        }
        self.subs = [
            self.create_subscription(AudioChunk, common.AUDIO_IN, self.on_audio,
                                     common.sensor_qos(), callback_group=self.input_group),
            self.create_subscription(Image, common.CAMERA, self.on_image,
                                     common.sensor_qos(), callback_group=self.input_group),
            self.create_subscription(AudioChunk, common.AUDIO_PLAYED, self.on_played,
                                     common.reliable_qos(50), callback_group=self.input_group),
            self.create_subscription(FlameParams, USER_FLAME_TOPIC, self.on_user_flame,
                                     common.reliable_qos(10), callback_group=self.input_group),
        ]
        try:  # geometry_msgs: present on every ROS 2 install, imported here to keep the
            from geometry_msgs.msg import PointStamped  # node's import list minimal
            self.subs.append(self.create_subscription(
                PointStamped, USER_POSITION_TOPIC, self.on_user_position,
                common.reliable_qos(10), callback_group=self.input_group))
        except ImportError:
            self.get_logger().warning('no geometry_msgs: the robot will not look at the user')
        self.state_label = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        with self._lock:
            self.loop.reset(self.params['seed'])
            self.framer = AudioFramer()
            self.echo = self._echo_stage()
            self._pending.clear()
            self.playout.reset()
            self.active = True
        self.timer = self.create_timer(STEP_POLL_S, self.on_tick,
                                       callback_group=self.step_group)
        self.state_label = 'active'
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_timer()
        self.state_label = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        self.state_label = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._release()
        self.state_label = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _stop_timer(self) -> None:
        with self._lock:
            self.active = False
            self._pending.clear()
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None

    def _release(self) -> None:
        self._stop_timer()
        for pub in self.pubs.values():
            self.destroy_lifecycle_publisher(pub)
        for sub in self.subs:
            self.destroy_subscription(sub)
        self.pubs, self.subs = {}, []
        if self.backend is not None:
            self.backend.close()
        self.backend = self.loop = None

    def close(self) -> None:
        """Releases the backend when the process ends."""
        self._release()

    # -- input -----------------------------------------------------------------------------

    def on_audio(self, msg) -> None:
        """Re-frames one user audio chunk; malformed chunks are counted and skipped."""
        if not self.active:
            return
        try:
            samples, rate = interfaces.audio_from_msg(msg)
            stamp = interfaces.audio_stamp_ns(msg)
            if samples.shape[0] == 0:
                raise ValueError('no samples')
        except ValueError as err:
            self.counts['audio_refused'] += 1
            self.log.warning('bad_audio', f'user audio chunk refused: {err}')
            return
        with self._lock:
            if self.framer is None:
                return
            for frame in self.framer.push(samples, rate, stamp):
                self._pending.append(frame)
            while len(self._pending) > self.params['max_pending_frames']:
                self._pending.popleft()
                self.counts['frames_dropped'] += 1

    def on_image(self, msg) -> None:
        """Keeps the latest camera image as the user-face input."""
        try:
            img = msg_to_rgb(msg)
            stamp = interfaces.stamp_to_ns(msg.header.stamp)
        except ValueError as err:
            self.counts['images_refused'] += 1
            self.log.warning('bad_image', f'camera image refused: {err}')
            return
        self._image = (img, stamp)
        self.counts['images'] += 1

    def on_user_flame(self, msg) -> None:
        """The user's perceived face (stamp = capture time): the model's user stream."""
        try:
            frame = interfaces.flame_from_msg(msg)
        except ValueError as err:
            self.counts['user_flame_refused'] += 1
            self.log.warning('user_flame', f'user FLAME refused: {err}')
            return
        if self.loop is not None:
            self.loop.perception.observe_frame(frame)
            self.counts['user_flames'] += 1

    def on_user_position(self, msg) -> None:
        """Where the user's eyes are (camera optical frame): where the robot looks."""
        if self.loop is not None:
            p = msg.point
            self.loop.perception.track.add_position(interfaces.stamp_to_ns(msg.header.stamp),
                                                    (p.x, p.y, p.z))

    def on_played(self, msg) -> None:
        """Audio player feedback: how long from publishing a chunk to hearing it, and the
        echo canceller's reference (what was heard, stamped when)."""
        try:
            heard = interfaces.stamp_to_ns(msg.header.stamp)
            key = hash(bytes(msg.data))
        except (ValueError, TypeError):
            self.counts['played_refused'] += 1
            return
        with self._lock:
            if self.echo is not None:
                try:
                    samples, rate = interfaces.audio_from_msg(msg)
                    self.echo.add_reference(samples, rate, heard)
                except ValueError as err:
                    self.counts['played_refused'] += 1
                    self.log.warning('bad_played', f'audio/played chunk refused: {err}')
        self.playout.played(key, heard)

    # -- the step --------------------------------------------------------------------------

    @common.until_shutdown
    def on_tick(self) -> None:
        """Steps the frames that are ready (at most MAX_STEPS_PER_TICK)."""
        with self._lock:
            frames = [self._pending.popleft()
                      for _ in range(min(MAX_STEPS_PER_TICK, len(self._pending)))]
        for frame in frames:
            if not self.active or self.loop is None:
                return
            self.step(frame)

    def _playout_floor_ms(self) -> float:
        return 0.0 if self.head_lead_ms is None else playout_floor_ms(self.head_lead_ms)

    def on_head_lead(self, msg) -> None:
        """The head driver's lead: the voice is held back by at least it + one face frame."""
        lead = float(msg.data)
        if not 0.0 <= lead <= 2000.0:
            self.counts['head_lead_refused'] += 1
            self.log.warning('head_lead', f'head lead {lead} ms refused (outside [0, 2000])')
            return
        self.head_lead_ms = lead
        floor = self._playout_floor_ms()
        if floor > self.params['playout_delay_ms']:
            self.get_logger().info(
                f'head lead {lead:g} ms: the voice is held back by {floor:g} ms '
                f'(playout_delay_ms {self.params["playout_delay_ms"]:g} is below it)')

    def _playout_delay_ns(self, frame) -> int:
        base_ms = max(self.params['playout_delay_ms'], self._playout_floor_ms())
        return self.playout.delay_ns(int(base_ms * 1e6), frame.stamp_ns,
                                     common.now_ns(self), self.params['measure_playout'])

    def _user_image(self, frame):
        if self._image is None:
            return None
        img, stamp = self._image
        if abs(frame.stamp_ns - stamp) > self.params['max_image_age_s'] * 1e9:
            return None
        return img

    def step(self, frame) -> None:
        """One DuplexLoop step on ``frame``; publishes audio, FLAME, text and state."""
        self.playout_delay_ns = self._playout_delay_ns(frame)
        t0 = time.perf_counter()
        if self.echo is not None:
            with self._lock:
                frame = self.echo.process(frame)
        try:
            result = self.loop.step(frame, user_image=self._user_image(frame),
                                    playout_delay_ns=self.playout_delay_ns)
        except Exception as err:  # a backend bug must not stop the stream
            self.counts['step_errors'] += 1
            self.log.warning('step', f'step {frame.index} failed: {type(err).__name__}: {err}')
            return
        self.counts['steps'] += 1
        p = self.params
        audio = interfaces.audio_to_msg(result.robot_audio, MODEL_RATE, result.audio_stamp_ns,
                                        p['output_encoding'], p['audio_frame_id'],
                                        out=AudioChunk())
        self.playout.sent(hash(bytes(audio.data)), common.now_ns(self))
        self.pubs['audio'].publish(audio)
        for f in result.flame:
            try:
                self.pubs['flame'].publish(
                    interfaces.flame_to_msg(f, p['face_frame_id'], out=FlameParams()))
            except ValueError as err:
                self.counts['flame_refused'] += 1
                self.log.warning('flame', f'FLAME frame not sent: {err}')
        out = result.output
        if out.text:
            text = String()
            text.data = out.text
            self.pubs['text'].publish(text)
        timings = dict(result.timings_ms)
        timings['publish'] = (time.perf_counter() - t0) * 1000.0 - timings.get('step', 0.0)
        self.latency.add(timings)
        self.pubs['state'].publish(interfaces.dialogue_state_msg(
            int(result.state), result.capture_stamp_ns,
            user_speaking=result.user.speaking, robot_speaking=out.speaking,
            barge_in=out.barge_in, backchannel=out.backchannel,
            user_speech_prob=float(np.clip(result.user.speech_prob, 0.0, 1.0)),
            text=out.text, step_latency_ms=result.timings_ms.get('step', 0.0),
            backend=self.backend.describe(), out=DialogueState()))

    # -- diagnostics -----------------------------------------------------------------------

    @common.until_shutdown
    def publish_diagnostics(self) -> None:
        """Latency per stage, real-time factor, drop/refusal counters, backend in use."""
        values: dict = {'lifecycle state': self.state_label,
                        'backend': self.backend.describe() if self.backend else '',
                        'weights_path': self.params['weights_path'],
                        'engine_path': self.params['engine_path'],
                        'playout delay ms': self.playout_delay_ns / 1e6,
                        'head lead ms': '' if self.head_lead_ms is None else self.head_lead_ms,
                        'parameter changes refused': self.live.refused}
        values.update(self.latency.summary())
        steps = self.latency.values.get('step')
        if steps:
            values['real-time factor'] = float(np.mean(steps)) / (FRAME_PERIOD_S * 1000.0)
        for key in ('steps', 'frames_dropped', 'audio_refused', 'images', 'images_refused',
                    'step_errors', 'flame_refused', 'played_refused', 'user_flames',
                    'user_flame_refused', 'head_lead_refused'):
            values[key] = self.counts[key]
        values['played_unmatched'] = self.playout.unmatched
        if self.echo is not None:
            values.update({f'echo {k}': v for k, v in self.echo.stats().items()})
        if self.framer is not None:
            s = self.framer.stats
            values.update({'input gaps filled': s.gaps_filled, 'input restarts': s.restarts,
                           'non-finite input samples': s.non_finite_samples})
        bad = self.counts['frames_dropped'] + self.counts['audio_refused'] + \
            self.counts['step_errors']
        level = 'error' if self.error else ('warn' if bad else 'ok')
        message = self.error or self.state_label
        echo = self.echo.reference_status if self.echo is not None else 'ok'
        if echo not in ('ok', 'off') and not self.error:
            level, message = 'warn', f'{message}; echo: {echo}'
        self.diag_pub.publish(common.diagnostic_array(
            self, common.now_ns(self), 'duplex loop', level, message, values))


def main(args=None) -> int:
    """Entry point of ``ros2 run facebot dialogue`` (starts unconfigured)."""
    return common.run(DialogueNode, args)
