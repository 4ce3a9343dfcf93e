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

"""FLAME frames -> the face display: sensor_msgs/Image (rgb8) at ``fps`` on ``face/image``.

Wraps the display's renderer (:func:`facebot.robot.display.face_renderer`: the stylised face,
or the FLAME mesh when the display YAML names a converted model in ``flame_model``). FLAME
stamps are show times, so each display tick draws the newest frame whose stamp has come
(holding it between frames); with no frame for ``hold_s`` it shows the neutral face. The
image is stamped with the time it is shown. With ``show_window`` (and a display) the face is
also shown full screen via OpenCV.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import time

import numpy as np

from facebot import interfaces
from facebot.face.flame import FlameFrame
from facebot.msg import FlameParams
from facebot.nodes import _common as common
from facebot.nodes._common import Param
from facebot.robot.display import DisplayGeometry, face_renderer, load_display_config
from facebot.robot.mesh_renderer import MeshRenderer
from rclpy.node import Node
from sensor_msgs.msg import Image

GEOMETRY_RANGE = (-0.5, 2.0)


def params_for(cfg) -> tuple[Param, ...]:
    """The node's parameters, with defaults from the display configuration file."""
    specs = [
        Param('fps', 25.0, 'images per second', 1.0, 120.0, read_only=True),
        Param('frame_id', 'screen_frame', 'header.frame_id of the image', live=True),
        Param('show_window', False, 'also show the face in a full-screen OpenCV window',
              read_only=True),
        Param('window_name', 'facebot', 'title of that window', read_only=True),
        Param('hold_s', 1.0, 'no new FLAME frame for this long: show the neutral face',
              0.05, 60.0, live=True),
        Param('gaze_gain', float(cfg.gaze_gain), 'iris shift per radian of eye rotation',
              0.0, 10.0, live=True),
        Param('anti_aliasing', bool(cfg.anti_aliasing), 'anti-aliased drawing', live=True),
    ]
    for f in dataclasses.fields(DisplayGeometry):
        specs.append(Param(f'geometry.{f.name}', float(getattr(cfg.geometry, f.name)),
                           f'face geometry: {f.name} (fraction of the picture size)',
                           *GEOMETRY_RANGE, live=True))
    return tuple(specs)


def apply_params(cfg, values: dict):
    """A new, validated FaceDisplayConfig with the look parameters applied."""
    geometry = dataclasses.replace(cfg.geometry, **{
        f.name: values[f'geometry.{f.name}'] for f in dataclasses.fields(DisplayGeometry)})
    return dataclasses.replace(cfg, gaze_gain=values['gaze_gain'],
                               anti_aliasing=values['anti_aliasing'], geometry=geometry)


class FaceDisplayNode(Node):
    """Renders FLAME frames to images at a fixed rate."""

    def __init__(self, **kwargs) -> None:
        super().__init__('face_display', **kwargs)
        path = common.declare(self, [Param(
            'display_config', '', 'display YAML; empty = the package face_display.yaml',
            read_only=True)])['display_config'] or None
        self.base_config = load_display_config(path)
        self.specs = params_for(self.base_config)
        self.params = common.declare(self, self.specs)
        self.renderer = face_renderer(apply_params(self.base_config, self.params))
        # the FLAME mesh, when configured: read once, reused when live parameters change
        self.flame = self.renderer.model if isinstance(self.renderer, MeshRenderer) else None
        self.live = common.LiveParams(self, self.specs, self._apply)
        self.log = common.RateLimitedLog(self.get_logger())
        if self.flame is not None:
            self.get_logger().info(
                f'drawing the FLAME mesh of {self.base_config.flame_model} '
                f'({self.flame.n_vertices} vertices, {self.flame.n_faces} triangles)')
        self.counts = {'frames': 0, 'refused': 0, 'images': 0}
        self.latency = common.Latency()
        self._stamps: list[int] = []
        self._frames: list[FlameFrame] = []
        self._last_rx_ns: int | None = None
        self.image_pub = self.create_publisher(Image, common.FACE_IMAGE, common.sensor_qos())
        self.diag_pub = self.create_publisher(
            common.DiagnosticArray, common.DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(FlameParams, common.FLAME, self.on_flame,
                                 common.reliable_qos(50))
        self.create_timer(1.0 / self.params['fps'], self.on_tick)
        self.create_timer(common.DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)
        self.window = None
        if self.params['show_window']:
            self._open_window()

    def _open_window(self) -> None:
        if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
            self.get_logger().warning('show_window: no display; publishing images only')
            return
        import cv2

        try:
            name = self.params['window_name']
            cv2.namedWindow(name, cv2.WINDOW_NORMAL)
            cv2.setWindowProperty(name, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
            self.window = (cv2, name)
        except cv2.error as err:  # e.g. a headless OpenCV build
            self.get_logger().warning(f'show_window: OpenCV cannot open a window ({err})')

    def _apply(self, changes: dict) -> str | None:
        values = {**self.params, **changes}
        self.renderer = face_renderer(apply_params(self.base_config, values), self.flame)
        self.params = values
        return None

    def on_flame(self, msg) -> None:
        """Buffers one FLAME frame by its show time; malformed frames are counted."""
        try:
            frame = interfaces.flame_from_msg(msg)
        except ValueError as err:
            self.counts['refused'] += 1
            self.log.warning('flame', f'FLAME message refused: {err}')
            return
        i = bisect.bisect_left(self._stamps, frame.stamp_ns)
        self._stamps.insert(i, frame.stamp_ns)
        self._frames.insert(i, frame)
        self.counts['frames'] += 1
        self._last_rx_ns = common.now_ns(self)

    def _current(self, now: int) -> FlameFrame:
        i = bisect.bisect_right(self._stamps, now)
        if i > 1:  # frames before the current one are no longer needed
            del self._stamps[:i - 1], self._frames[:i - 1]
            i = 1
        stale = self._last_rx_ns is None or \
            now - self._last_rx_ns > self.params['hold_s'] * 1e9
        if i == 0 or stale:
            return FlameFrame.neutral()
        return self._frames[0]

    @common.until_shutdown
    def on_tick(self) -> None:
        """Renders and publishes the frame due now."""
        now = common.now_ns(self)
        t0 = time.perf_counter()
        rgb = self.renderer.render(self._current(now))
        msg = Image()
        interfaces.make_header(now, self.params['frame_id'], msg.header)
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding = 'rgb8'
        msg.is_bigendian = 0
        msg.step = int(rgb.shape[1] * 3)
        interfaces._assign(msg, 'data', np.frombuffer(rgb.tobytes(), np.uint8))
        self.image_pub.publish(msg)
        self.counts['images'] += 1
        if self.window is not None:
            cv2, name = self.window
            cv2.imshow(name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.waitKey(1)
        self.latency.add({'render': (time.perf_counter() - t0) * 1000.0})

    @common.until_shutdown
    def publish_diagnostics(self) -> None:
        """Frame and refusal counts, render time."""
        values = dict(self.counts)
        values.update(self.latency.summary())
        level = 'warn' if self.counts['refused'] else 'ok'
        self.diag_pub.publish(common.diagnostic_array(
            self, common.now_ns(self), 'face display', level, 'rendering', values))


def main(args=None) -> int:
    """Entry point of ``ros2 run facebot face_display``."""
    return common.run(FaceDisplayNode, args)
