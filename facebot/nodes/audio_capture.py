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

"""Microphone -> ``audio/in`` (facebot/msg/AudioChunk, SensorDataQoS).

Wraps :class:`facebot.pipeline.sources.MicrophoneSource` (PortAudio through sounddevice,
imported when the node starts): each captured block becomes one AudioChunk stamped with the
capture time of its first sample (the ADC clock, mapped once to wall-clock time).
Capture runs on its own thread; the executor only serves parameters and diagnostics.
"""
from __future__ import annotations

import threading

from facebot import interfaces
from facebot.audio.pcm import ENCODING_DTYPES
from facebot.msg import AudioChunk
from facebot.nodes import _common as common
from facebot.nodes._common import Param
from facebot.pipeline.sources import MicrophoneSource, SourceError
from rclpy.node import Node

PARAMS = (
    Param('device', '', 'PortAudio input device: name or index; empty = system default',
          read_only=True),
    Param('sample_rate', 0, 'capture rate in Hz; 0 = the device default', 0, 384000,
          read_only=True),
    Param('channels', 1, 'channels captured (sent interleaved; receivers mix to mono)', 1, 32,
          read_only=True),
    Param('chunk_ms', 20.0, 'capture block length in ms (one message per block)', 2.0, 500.0,
          read_only=True),
    Param('encoding', 'S16LE', 'sample format of the published chunks',
          choices=tuple(ENCODING_DTYPES), live=True),
    Param('frame_id', 'microphone', 'header.frame_id of the published chunks', live=True),
)


class AudioCaptureNode(Node):
    """Publishes the microphone as AudioChunk messages."""

    def __init__(self, **kwargs) -> None:
        super().__init__('audio_capture', **kwargs)
        self.params = common.declare(self, PARAMS)
        self.live = common.LiveParams(self, PARAMS, self._apply)
        self.pub = self.create_publisher(AudioChunk, common.AUDIO_IN, common.sensor_qos())
        self.diag_pub = self.create_publisher(
            common.DiagnosticArray, common.DIAGNOSTICS_TOPIC, 10)
        self.published = 0
        self.errors = 0
        self.error = ''
        self._stop = threading.Event()
        self.source = None
        self._thread = None
        self.create_timer(common.DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)
        p = self.params
        device = p['device'] or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        try:
            self.source = MicrophoneSource(device, p['sample_rate'] or None, p['channels'],
                                           p['chunk_ms'])
        except SourceError as err:
            self.error = str(err)
            self.get_logger().error(self.error)
            return
        self.get_logger().info(
            f'capturing {self.source.sample_rate} Hz x {p["channels"]} from '
            f'{p["device"] or "the default device"}')
        self._thread = threading.Thread(target=self._capture, name='audio_capture',
                                        daemon=True)
        self._thread.start()

    def _apply(self, changes: dict) -> str | None:
        self.params.update(changes)
        return None

    @common.until_shutdown
    def _capture(self) -> None:
        try:
            for chunk in self.source:
                if self._stop.is_set():
                    break
                self._publish(chunk)
        except SourceError as err:
            self.error = str(err)
            self.get_logger().error(self.error)

    def _publish(self, chunk) -> None:
        try:
            msg = interfaces.audio_to_msg(chunk.samples, chunk.sample_rate, chunk.stamp_ns,
                                          self.params['encoding'], self.params['frame_id'],
                                          out=AudioChunk())
        except ValueError as err:
            self.errors += 1
            self.get_logger().warning(f'chunk not sent: {err}')
            return
        self.pub.publish(msg)
        self.published += 1

    @common.until_shutdown
    def publish_diagnostics(self) -> None:
        src = self.source
        values = {'chunks published': self.published, 'encode errors': self.errors,
                  'input overflows': getattr(src, 'overflows', 0),
                  'chunks dropped (queue full)': getattr(src, 'dropped', 0),
                  'sample rate': getattr(src, 'sample_rate', 0),
                  'encoding': self.params['encoding']}
        level = 'error' if self.error else ('warn' if values['input overflows'] else 'ok')
        self.diag_pub.publish(common.diagnostic_array(
            self, common.now_ns(self), 'microphone', level, self.error or 'capturing', values))

    def close(self) -> None:
        """Stops the capture thread (the stream closes when it leaves its loop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def main(args=None) -> int:
    """Entry point of ``ros2 run facebot audio_capture``."""
    return common.run(AudioCaptureNode, args)
