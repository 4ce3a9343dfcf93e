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

"""``audio/out`` (facebot/msg/AudioChunk) -> loudspeaker, and ``audio/played`` feedback.

Wraps :class:`facebot.pipeline.playback.SpeakerSink` (PortAudio, 24 kHz mono). Chunks in
any rate, channel count and encoding are mixed to mono and resampled. A chunk's stamp is
when it is meant to be heard: with ``hold_until_stamp`` the player waits until then (minus
the device latency) before writing it. Each chunk written is republished unchanged on
``audio/played`` with the stamp replaced by the time it is actually heard (now + the
device's output latency), which the dialogue node uses to measure its playout delay.
Playback runs on its own thread, so a full device buffer never blocks the executor.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

from facebot import interfaces
from facebot.audio.framing import MODEL_RATE, StreamResampler
from facebot.audio.pcm import to_mono
from facebot.msg import AudioChunk
from facebot.nodes import _common as common
from facebot.nodes._common import Param
from facebot.pipeline.playback import SpeakerSink
from facebot.pipeline.sources import SourceError
from rclpy.node import Node

PARAMS = (
    Param('device', '', 'PortAudio output device: name or index; empty = system default',
          read_only=True),
    Param('latency', 'low', "PortAudio output latency: 'low', 'high' or seconds",
          read_only=True),
    Param('hold_until_stamp', True,
          'wait until each chunk is due (its stamp minus the device latency) before playing',
          live=True),
    Param('max_hold_s', 2.0, 'a chunk due later than this is played at once (and counted)',
          0.0, 10.0, live=True),
    Param('max_queue_s', 5.0, 'audio queued beyond this is dropped (and counted)', 0.1, 60.0,
          live=True),
)


class AudioPlayerNode(Node):
    """Plays AudioChunk messages and reports when each was heard."""

    def __init__(self, **kwargs) -> None:
        super().__init__('audio_player', **kwargs)
        self.params = common.declare(self, PARAMS)
        self.live = common.LiveParams(self, PARAMS, self._apply)
        self.log = common.RateLimitedLog(self.get_logger())
        self.played_pub = self.create_publisher(AudioChunk, common.AUDIO_PLAYED,
                                                common.reliable_qos(50))
        self.diag_pub = self.create_publisher(
            common.DiagnosticArray, common.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(AudioChunk, common.AUDIO_OUT, self.on_audio,
                                 common.reliable_qos(50))
        self.create_timer(common.DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)
        self.counts = {'received': 0, 'played': 0, 'refused': 0, 'dropped': 0,
                       'held_too_long': 0}
        self._queue: queue.Queue = queue.Queue()
        self._queued_s = 0.0
        self._lock = threading.Lock()
        self._resampler: StreamResampler | None = None
        self._stop = threading.Event()
        self.error = ''
        self.sink = None
        self._thread = None
        device = self.params['device'] or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        latency = self.params['latency']
        try:
            latency = float(latency)
        except ValueError:
            pass
        try:
            self.sink = SpeakerSink(device, latency)
        except SourceError as err:
            self.error = str(err)
            self.get_logger().error(self.error)
            return
        self._thread = threading.Thread(target=self._play, name='audio_player', daemon=True)
        self._thread.start()

    def _apply(self, changes: dict) -> str | None:
        self.params.update(changes)
        return None

    def on_audio(self, msg) -> None:
        """Decodes, converts to 24 kHz mono and queues one chunk (malformed: counted)."""
        self.counts['received'] += 1
        try:
            samples, rate = interfaces.audio_from_msg(msg)
            stamp = interfaces.audio_stamp_ns(msg)
        except ValueError as err:
            self.counts['refused'] += 1
            self.log.warning('bad_audio', f'audio chunk refused: {err}')
            return
        mono = to_mono(samples)
        if mono.shape[0] == 0:
            self.counts['refused'] += 1
            self.log.warning('empty_audio', 'audio chunk refused: no samples')
            return
        mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
        if rate != MODEL_RATE:
            if self._resampler is None or self._resampler.in_rate != rate:
                self._resampler = StreamResampler(rate, MODEL_RATE)
            mono = self._resampler.process(mono)
        duration = mono.shape[0] / MODEL_RATE
        with self._lock:
            if self._queued_s + duration > self.params['max_queue_s']:
                self.counts['dropped'] += 1
                self.log.warning('queue_full', 'playback queue full: chunk dropped')
                return
            self._queued_s += duration
        self._queue.put((mono.astype(np.float32), stamp, msg, duration))

    def _latency_ns(self) -> int:
        return max(0, self.sink.expected_delay_ns(time.time_ns()))

    @common.until_shutdown
    def _play(self) -> None:
        while not self._stop.is_set():
            try:
                mono, stamp, msg, duration = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                self._queued_s = max(0.0, self._queued_s - duration)
            latency = self._latency_ns()
            if self.params['hold_until_stamp']:
                due = stamp - latency
                wait_s = (due - common.now_ns(self)) / 1e9
                if wait_s > self.params['max_hold_s']:
                    self.counts['held_too_long'] += 1
                    wait_s = 0.0
                end = time.monotonic() + max(0.0, wait_s)
                while not self._stop.is_set():
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        break
                    time.sleep(min(0.002, remaining))
            heard = common.now_ns(self) + self._latency_ns()
            self.sink.play(mono)
            self.counts['played'] += 1
            played = AudioChunk()
            interfaces.make_header(heard, msg.header.frame_id, played.header)
            played.sample_rate = msg.sample_rate
            played.channels = msg.channels
            played.encoding = msg.encoding
            played.data = msg.data
            self.played_pub.publish(played)

    @common.until_shutdown
    def publish_diagnostics(self) -> None:
        values = dict(self.counts)
        values['queued s'] = float(self._queued_s)
        values['underflows'] = getattr(self.sink, 'underflows', 0)
        if self.sink is not None:
            values['output latency ms'] = self._latency_ns() / 1e6
        level = 'error' if self.error else ('warn' if self.counts['refused'] else 'ok')
        self.diag_pub.publish(common.diagnostic_array(
            self, common.now_ns(self), 'speaker', level, self.error or 'playing', values))

    def close(self) -> None:
        """Stops the playout thread and closes the device."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.sink is not None:
            self.sink.close()


def main(args=None) -> int:
    """Entry point of ``ros2 run facebot audio_player``."""
    return common.run(AudioPlayerNode, args)
