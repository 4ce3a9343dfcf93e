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

"""The other end of the real-graph tests: a plain rclpy process on the same DDS domain.

Run by test/ros_graph.py inside the sourced ROS 2 + facebot workspace (never imported by
pytest, which stays ROS-free). Each sub-command does one thing a robot's environment does
and prints one JSON object on stdout:

- ``wait-nodes NAME... [--active NODE]``: until every node is on the graph (and active).
- ``set NODE:NAME=VALUE...``: parameter changes, with each one's result and reason.
- ``converse --wav F``: plays F as a microphone would (``audio/in`` chunks at real time,
  stamped with their capture time) and records what facebot publishes (robot audio, FLAME,
  face images, head commands, dialogue state, diagnostics), optionally into an MCAP written
  with facebot's own bag writer (``--bag``); ``--heard`` also answers like an audio player.
- ``malformed``: sends broken audio, images and FLAME frames, then good ones.
- ``flame --seconds S``: publishes a FLAME stream that asks for far too much motion.
- ``estop true|false``: the head's e-stop service, then the diagnostics.
- ``tone``: a tone on ``audio/out``; what the speaker and microphone nodes publish.
- ``echo --wav F``: the robot's voice on ``audio/played`` and its echo in ``audio/in``.
- ``camera --image F``: a camera showing a face, then broken images.
- ``listen --seconds S``: what facebot publishes meanwhile.
- ``graph --topics T... --nodes N...``: endpoints (types, QoS) and parameter descriptors.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from facebot import interfaces
from facebot.face.flame import FlameFrame, FrameSource
from facebot.msg import AudioChunk, DialogueState, FlameParams

RELIABLE = QoSProfile(depth=50)
TYPES = {  # what the probe listens to (relative names: a namespace applies)
    'audio/out': AudioChunk, 'face/flame': FlameParams, 'face/image': Image,
    'dialogue/state': DialogueState, 'dialogue/text': String,
    '/head_position_controller/commands': Float64MultiArray,
    'head/joint_commands': JointState, '/diagnostics': DiagnosticArray,
    'audio/played': AudioChunk,
}
BAG_TYPES = {AudioChunk: 'facebot/msg/AudioChunk', FlameParams: 'facebot/msg/FlameParams',
             DialogueState: 'facebot/msg/DialogueState', String: 'std_msgs/msg/String',
             Image: 'sensor_msgs/msg/Image', Float64MultiArray: 'std_msgs/msg/Float64MultiArray',
             JointState: 'sensor_msgs/msg/JointState',
             DiagnosticArray: 'diagnostic_msgs/msg/DiagnosticArray'}


def now_ns(node) -> int:
    return int(node.get_clock().now().nanoseconds)


class Listener:
    """Subscribes to everything facebot publishes and keeps what the tests look at."""

    def __init__(self, node: Node, bag=None, heard_delay_s: float | None = None) -> None:
        self.node = node
        self.bag = bag
        self.lock = threading.Lock()
        self.got: dict[str, list] = {t: [] for t in TYPES}
        self.diag: dict[str, dict] = {}
        self.played_pub = None
        self.heard_delay_ns = None
        if heard_delay_s is not None:  # answer like audio_player: "heard" after a delay
            self.played_pub = node.create_publisher(AudioChunk, 'audio/played', RELIABLE)
            self.heard_delay_ns = int(heard_delay_s * 1e9)
        for topic, cls in TYPES.items():
            if topic == 'audio/played' and self.played_pub is not None:
                continue
            qos = qos_profile_sensor_data if cls is Image else RELIABLE
            node.create_subscription(cls, topic, self._callback(topic), qos)

    def _callback(self, topic):
        def on_msg(msg):
            recv = now_ns(self.node)
            with self.lock:
                self.got[topic].append(self._summary(topic, msg, recv))
                if topic == '/diagnostics':
                    for st in msg.status:
                        self.diag[st.name] = {'level': int.from_bytes(st.level, 'little')
                                              if isinstance(st.level, bytes) else int(st.level),
                                              'message': st.message,
                                              'values': {kv.key: kv.value for kv in st.values}}
                if self.bag is not None:
                    name = topic if topic.startswith('/') else '/' + topic
                    self.bag.write_raw(name, recv, bytes(serialize_message(msg)))
            if topic == 'audio/out' and self.played_pub is not None:
                played = AudioChunk()
                played.header.frame_id = 'speaker'
                played.header.stamp = rclpy.time.Time(
                    nanoseconds=recv + self.heard_delay_ns).to_msg()
                played.sample_rate, played.channels = msg.sample_rate, msg.channels
                played.encoding, played.data = msg.encoding, msg.data
                self.played_pub.publish(played)
        return on_msg

    @staticmethod
    def _summary(topic, msg, recv) -> dict:
        out = {'recv': recv}
        header = getattr(msg, 'header', None)
        if header is not None:
            out['stamp'] = interfaces.stamp_to_ns(header.stamp)
        if isinstance(msg, AudioChunk):
            samples, rate = interfaces.audio_from_msg(msg)
            out.update(rate=rate, n=int(samples.shape[0]), channels=int(msg.channels),
                       encoding=msg.encoding,
                       rms=float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
                       if samples.size else 0.0)
        elif isinstance(msg, FlameParams):
            out.update(jaw=float(msg.jaw_pose[0]), source=int(msg.source),
                       seq=int(msg.sequence), n_expr=len(msg.expression))
        elif isinstance(msg, Image):
            out.update(width=int(msg.width), height=int(msg.height), encoding=msg.encoding,
                       nbytes=len(msg.data))
        elif isinstance(msg, Float64MultiArray):
            out['data'] = [float(x) for x in msg.data]
        elif isinstance(msg, JointState):
            out.update(name=list(msg.name), position=[float(x) for x in msg.position],
                       velocity=[float(x) for x in msg.velocity])
        elif isinstance(msg, DialogueState):
            out.update(state=int(msg.state), barge_in=bool(msg.barge_in))
        elif isinstance(msg, String):
            out['text'] = msg.data
        return out

    def result(self) -> dict:
        with self.lock:
            return {'topics': {k: list(v) for k, v in self.got.items()},
                    'diagnostics': dict(self.diag)}


def spin_for(node, seconds: float, until=None) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)
        if until is not None and until():
            return


def cmd_wait_nodes(node, args) -> dict:
    """Until every named node is on the graph (and, with ``--active``, that lifecycle node
    reports ``active``)."""
    want = set(args.names)
    end = time.monotonic() + args.timeout
    seen: set = set()
    while time.monotonic() < end:
        seen = {('/' + ns.strip('/') + '/' + n).replace('//', '/')
                for n, ns in node.get_node_names_and_namespaces()}
        if want <= seen:
            break
        spin_for(node, 0.2)
    state = ''
    if args.active and want <= seen:
        from lifecycle_msgs.srv import GetState
        client = node.create_client(GetState, f'{args.active}/get_state')
        while time.monotonic() < end and state != 'active':
            if client.wait_for_service(timeout_sec=1.0):
                future = client.call_async(GetState.Request())
                rclpy.spin_until_future_complete(node, future, timeout_sec=2.0)
                if future.done():
                    state = future.result().current_state.label
            if state != 'active':
                spin_for(node, 0.2)
    ok = want <= seen and (not args.active or state == 'active')
    return {'ok': ok, 'seen': sorted(seen), 'state': state}


def cmd_set(node, args) -> dict:
    """Sets parameters as ``ros2 param set`` does, many in one process: node:name=yaml."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    results = []
    for item in args.items:
        target, assignment = item.split(':', 1)
        name, value = assignment.split('=', 1)
        client = node.create_client(SetParameters, f'{target}/set_parameters')
        client.wait_for_service(timeout_sec=10.0)
        import yaml
        param = Parameter(name, value=yaml.safe_load(value)).to_parameter_msg()
        future = client.call_async(SetParameters.Request(parameters=[param]))
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        r = future.result().results[0] if future.done() else None
        results.append({'item': item, 'successful': bool(r and r.successful),
                        'reason': r.reason if r else 'no response'})
    return {'results': results}


def read_wav(path: str) -> tuple[np.ndarray, int]:
    import soundfile
    audio, rate = soundfile.read(path, dtype='float32', always_2d=True)
    return audio.mean(axis=1), int(rate)


def cmd_converse(node, args) -> dict:
    bag = None
    if args.bag:
        from facebot.bagio import BagRecorder
        topics = {('/' + t).replace('//', '/'): BAG_TYPES[c] for t, c in TYPES.items()}
        topics['/audio/in'] = 'facebot/msg/AudioChunk'
        bag = BagRecorder(args.bag, topics).open()
    listener = Listener(node, bag, args.heard_delay_s)
    pub = node.create_publisher(AudioChunk, 'audio/in', qos_profile_sensor_data)
    speech, rate = read_wav(args.wav)
    signal = np.concatenate([np.zeros(int(rate * args.lead_s), np.float32), speech,
                             np.zeros(int(rate * args.tail_s), np.float32)])
    chunk = int(rate * args.chunk_ms / 1000)
    # let discovery settle so the first chunks are not lost to an unmatched publisher
    spin_for(node, 10.0, until=lambda: pub.get_subscription_count() > 0)
    sent = []
    t_start = time.monotonic()
    t0 = now_ns(node)
    for i, start in enumerate(range(0, signal.shape[0] - chunk + 1, chunk)):
        due = t_start + (start + chunk) / rate  # a chunk exists once its last sample does
        while time.monotonic() < due:
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
        # capture time of the chunk's first sample, on the sound card's clock
        stamp = t0 + start * 1_000_000_000 // rate
        msg = interfaces.audio_to_msg(signal[start:start + chunk], rate, stamp, 'S16LE',
                                      'microphone', out=AudioChunk())
        pub.publish(msg)
        sent.append({'stamp': stamp, 'n': chunk})
        if bag is not None:
            with listener.lock:
                bag.write_raw('/audio/in', stamp, bytes(serialize_message(msg)))
    spin_for(node, args.settle_s)
    out = listener.result()
    out['sent'] = sent
    out['rate'] = rate
    if bag is not None:
        with listener.lock:
            bag.close()
        out['bag_counts'] = bag.counts
    return out


def _audio(stamp, **over):
    msg = interfaces.audio_to_msg(np.zeros(480, np.float32), 24000, stamp, 'S16LE', 'mic',
                                  out=AudioChunk())
    for k, v in over.items():
        setattr(msg, k, v)
    return msg


def cmd_malformed(node, args) -> dict:
    listener = Listener(node)
    audio = node.create_publisher(AudioChunk, 'audio/in', qos_profile_sensor_data)
    camera = node.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    flame = node.create_publisher(FlameParams, 'face/flame', RELIABLE)
    spin_for(node, 10.0, until=lambda: audio.get_subscription_count() > 0
             and flame.get_subscription_count() > 0)
    spin_for(node, 1.0)
    t = now_ns(node)
    odd = _audio(t)
    odd.data = odd.data[:-1]
    nan = interfaces.audio_to_msg(np.zeros(1920, np.float32), 24000, t, 'F32LE', 'mic',
                                  out=AudioChunk())
    nan.data = np.full(1920, np.nan, '<f4').tobytes()
    bad_audio = [_audio(t, encoding='MP3'), odd, _audio(t, data=b''),
                 _audio(t, sample_rate=0), nan]
    img = Image()
    img.height, img.width, img.encoding, img.step = 4, 4, 'rgb8', 12
    img.data = bytes(47)
    wrong_encoding = Image()
    wrong_encoding.height, wrong_encoding.width, wrong_encoding.step = 4, 4, 8
    wrong_encoding.encoding, wrong_encoding.data = 'weird16', bytes(32)
    bad_images = [img, wrong_encoding, Image()]
    bad_flames = []
    for field, value in (('jaw_pose', [math.nan, 0.0, 0.0]), ('source', 9),
                         ('expression', [math.inf] * 10), ('eyelids', [math.nan, 0.0])):
        frame = FlameFrame.neutral(stamp_ns=t, source=FrameSource.PROCEDURAL)
        msg = interfaces.flame_to_msg(frame, out=FlameParams())
        setattr(msg, field, value)
        bad_flames.append(msg)
    for msg in bad_audio:
        audio.publish(msg)
        spin_for(node, 0.05)
    for msg in bad_images:
        camera.publish(msg)
        spin_for(node, 0.05)
    for msg in bad_flames:
        flame.publish(msg)
        spin_for(node, 0.05)
    # then a good stream: the nodes must still work
    t0 = now_ns(node)
    for k in range(40):
        audio.publish(interfaces.audio_to_msg(np.zeros(1920, np.float32), 24000,
                                              t0 + k * 80_000_000, 'S16LE', 'mic',
                                              out=AudioChunk()))
        spin_for(node, 0.08)
    spin_for(node, args.settle_s)
    out = listener.result()
    out['sent'] = {'audio': len(bad_audio), 'images': len(bad_images),
                   'flame': len(bad_flames)}
    return out


def cmd_flame(node, args) -> dict:
    """A FLAME stream that swings the jaw and neck far beyond any joint's range."""
    listener = Listener(node)
    pub = node.create_publisher(FlameParams, 'face/flame', RELIABLE)
    spin_for(node, 10.0, until=lambda: pub.get_subscription_count() > 0)
    rng = np.random.default_rng(args.seed)
    t_end = time.monotonic() + args.seconds
    t_change = time.monotonic() + args.seconds / 2
    changed = None
    seq = 0
    while time.monotonic() < t_end:
        if args.set and changed is None and time.monotonic() >= t_change:
            changed = {'at': now_ns(node), **cmd_set(node, argparse.Namespace(items=args.set))}
        frame = FlameFrame.neutral(stamp_ns=now_ns(node) + 40_000_000,
                                   source=FrameSource.MODEL)
        frame.jaw_pose[0] = float(rng.uniform(-3, 3))
        frame.neck_pose[:] = rng.uniform(-2, 2, 3)
        frame.expression[:] = rng.uniform(-9, 9, frame.expression.shape[0])
        msg = interfaces.flame_to_msg(frame, out=FlameParams())
        msg.sequence = seq
        seq += 1
        pub.publish(msg)
        spin_for(node, 0.04)
    spin_for(node, args.settle_s)
    return {**listener.result(), 'changed': changed}


def cmd_tone(node, args) -> dict:
    """Speaks a tone on ``audio/out`` as the dialogue node would, hears ``audio/played``
    (what the speaker played, stamped when heard) and ``audio/in`` (the microphone)."""
    listener = Listener(node)
    mic = []
    node.create_subscription(AudioChunk, 'audio/in', lambda m: mic.append(
        {'stamp': interfaces.stamp_to_ns(m.header.stamp), 'rate': int(m.sample_rate),
         'n': len(m.data) // max(1, int(m.channels)) // 2 if m.encoding == 'S16LE' else -1,
         'encoding': m.encoding}), qos_profile_sensor_data)
    pub = node.create_publisher(AudioChunk, 'audio/out', RELIABLE)
    spin_for(node, 10.0, until=lambda: pub.get_subscription_count() > 0)
    spin_for(node, 0.5)
    sent = []
    for k in range(int(args.seconds / 0.08)):
        t = np.arange(1920) / 24000.0 + k * 0.08
        stamp = now_ns(node) + 100_000_000  # to be heard 100 ms from now
        pub.publish(interfaces.audio_to_msg((0.3 * np.sin(2 * np.pi * 440 * t)).astype(
            np.float32), 24000, stamp, 'S16LE', 'speaker', out=AudioChunk()))
        sent.append(stamp)
        spin_for(node, 0.08)
    spin_for(node, args.settle_s)
    return {**listener.result(), 'sent': sent, 'mic': mic}


def cmd_echo(node, args) -> dict:
    """A robot hearing itself: speech on ``audio/played`` (as the speaker plays it) and the
    same speech, delayed and quieter, in the microphone on ``audio/in``."""
    listener = Listener(node)
    played = node.create_publisher(AudioChunk, 'audio/played', RELIABLE)
    mic = node.create_publisher(AudioChunk, 'audio/in', qos_profile_sensor_data)
    spin_for(node, 10.0, until=lambda: mic.get_subscription_count() > 0
             and played.get_subscription_count() > 0)
    spin_for(node, 0.5)
    speech, rate = read_wav(args.wav)
    delay = int(rate * args.delay_ms / 1000)
    voice = np.concatenate([speech, np.zeros(rate, np.float32)])
    echo = args.gain * np.concatenate([np.zeros(delay, np.float32), voice])[:voice.shape[0]]
    chunk = rate // 50
    t_start, t0 = time.monotonic(), now_ns(node)
    starts = list(range(0, voice.shape[0] - chunk + 1, chunk))

    def play(start):  # the speaker reports a chunk as it plays it: before its echo is in
        stamp = t0 + start * 1_000_000_000 // rate
        played.publish(interfaces.audio_to_msg(voice[start:start + chunk], rate, stamp,
                                               'S16LE', 'speaker', out=AudioChunk()))
    play(starts[0])
    for i, start in enumerate(starts):
        due = t_start + (start + chunk) / rate
        while time.monotonic() < due:
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
        if i + 1 < len(starts):
            play(starts[i + 1])
        stamp = t0 + start * 1_000_000_000 // rate
        mic.publish(interfaces.audio_to_msg(echo[start:start + chunk], rate, stamp, 'S16LE',
                                            'microphone', out=AudioChunk()))
    spin_for(node, args.settle_s)
    return listener.result()


def cmd_camera(node, args) -> dict:
    """A camera: one picture as rgb8 Images at 10 Hz (capture-time stamps), then broken
    images; what the perception node makes of them."""
    import cv2
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    users = []
    node.create_subscription(FlameParams, 'face/user_flame', lambda m: users.append(
        {'stamp': interfaces.stamp_to_ns(m.header.stamp), 'source': int(m.source),
         'neck': [float(x) for x in m.neck_pose]}), RELIABLE)
    listener = Listener(node)
    raw = node.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    spin_for(node, 10.0, until=lambda: raw.get_subscription_count() > 0)
    spin_for(node, 0.5)
    sent = []
    for _ in range(args.count):
        msg = Image()
        stamp = now_ns(node)
        msg.header.stamp = rclpy.time.Time(nanoseconds=stamp).to_msg()
        msg.header.frame_id = 'camera_optical_frame'
        msg.height, msg.width = rgb.shape[:2]
        msg.encoding, msg.step = 'rgb8', rgb.shape[1] * 3
        msg.data = rgb.tobytes()
        raw.publish(msg)
        sent.append(stamp)
        spin_for(node, 0.1)
    for encoding, data in (('rgb8', bytes(47)), ('weird16', bytes(32)), ('mono8', b'')):
        broken = Image()
        broken.height, broken.width, broken.step = 4, 4, 12
        broken.encoding, broken.data = encoding, data
        raw.publish(broken)
        spin_for(node, 0.05)
    spin_for(node, args.settle_s)
    return {**listener.result(), 'sent': sent, 'user_flame': users}


def cmd_listen(node, args) -> dict:
    listener = Listener(node)
    spin_for(node, args.seconds)
    return listener.result()


def cmd_estop(node, args) -> dict:
    """Calls the head's e-stop service like an operator panel: waits, retries if a response
    is lost while DDS still matches the reply endpoints, then reports the diagnostics."""
    from std_srvs.srv import SetBool
    client = node.create_client(SetBool, args.service)
    if not client.wait_for_service(timeout_sec=15.0):
        return {'ok': False, 'why': 'service not available'}
    spin_for(node, 0.5)
    for attempt in range(5):
        future = client.call_async(SetBool.Request(data=args.data == 'true'))
        rclpy.spin_until_future_complete(node, future, timeout_sec=3.0)
        if future.done():
            response = future.result()
            listener = Listener(node)
            spin_for(node, args.settle_s)
            return {'ok': True, 'attempts': attempt + 1, 'success': response.success,
                    'message': response.message, **listener.result()}
    return {'ok': False, 'why': 'no response after 5 attempts'}


def cmd_graph(node, args) -> dict:
    """Every endpoint of the given topics and every parameter of the given nodes."""
    from rcl_interfaces.srv import DescribeParameters, ListParameters
    spin_for(node, args.settle_s)
    topics = {}
    for topic in args.topics:
        eps = []
        for kind, infos in (('pub', node.get_publishers_info_by_topic(topic)),
                            ('sub', node.get_subscriptions_info_by_topic(topic))):
            for info in infos:
                eps.append({'kind': kind, 'node': info.node_name, 'type': info.topic_type,
                            'reliability': info.qos_profile.reliability.name,
                            'depth': int(info.qos_profile.depth)})
        topics[topic] = eps
    params = {}
    for name in args.nodes:
        lister = node.create_client(ListParameters, f'{name}/list_parameters')
        describer = node.create_client(DescribeParameters, f'{name}/describe_parameters')
        if not lister.wait_for_service(timeout_sec=10.0):
            params[name] = None
            continue
        future = lister.call_async(ListParameters.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        names = list(future.result().result.names)
        describer.wait_for_service(timeout_sec=10.0)
        future = describer.call_async(DescribeParameters.Request(names=names))
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        params[name] = {d.name: {'description': d.description, 'read_only': d.read_only,
                                 'float_range': [[r.from_value, r.to_value]
                                                 for r in d.floating_point_range],
                                 'int_range': [[r.from_value, r.to_value]
                                               for r in d.integer_range]}
                        for d in future.result().descriptors}
    return {'topics': topics, 'params': params}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--namespace', default='')
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('wait-nodes')
    p.add_argument('names', nargs='+')
    p.add_argument('--timeout', type=float, default=30.0)
    p.add_argument('--active', default='', help='a lifecycle node that must be active')
    p = sub.add_parser('set')
    p.add_argument('items', nargs='+', help='node:name=value (value in YAML)')
    p = sub.add_parser('converse')
    p.add_argument('--wav', required=True)
    p.add_argument('--lead-s', type=float, default=0.5)
    p.add_argument('--tail-s', type=float, default=4.0)
    p.add_argument('--chunk-ms', type=float, default=20.0)
    p.add_argument('--settle-s', type=float, default=1.5)
    p.add_argument('--heard-delay-s', type=float, default=None)
    p.add_argument('--bag', default='')
    p = sub.add_parser('malformed')
    p.add_argument('--settle-s', type=float, default=2.5)
    p = sub.add_parser('flame')
    p.add_argument('--seconds', type=float, default=3.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--set', nargs='*', default=[],
                   help='node:name=value parameter changes made half-way (live limits)')
    p.add_argument('--settle-s', type=float, default=1.5)
    p = sub.add_parser('tone')
    p.add_argument('--seconds', type=float, default=1.6)
    p.add_argument('--settle-s', type=float, default=1.5)
    p = sub.add_parser('echo')
    p.add_argument('--wav', required=True)
    p.add_argument('--delay-ms', type=float, default=60.0)
    p.add_argument('--gain', type=float, default=0.5)
    p.add_argument('--settle-s', type=float, default=1.5)
    p = sub.add_parser('camera')
    p.add_argument('--image', required=True)
    p.add_argument('--count', type=int, default=10)
    p.add_argument('--settle-s', type=float, default=2.0)
    p = sub.add_parser('listen')
    p.add_argument('--seconds', type=float, default=2.0)
    p = sub.add_parser('estop')
    p.add_argument('data', choices=('true', 'false'))
    p.add_argument('--service', default='head/set_estop')
    p.add_argument('--settle-s', type=float, default=2.5)
    p = sub.add_parser('graph')
    p.add_argument('--topics', nargs='*', default=[])
    p.add_argument('--nodes', nargs='*', default=[])
    p.add_argument('--settle-s', type=float, default=1.0)
    args = parser.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node('facebot_test_probe', namespace=args.namespace or '/')
    try:
        result = {'wait-nodes': cmd_wait_nodes, 'converse': cmd_converse,
                  'malformed': cmd_malformed, 'flame': cmd_flame,
                  'graph': cmd_graph, 'listen': cmd_listen,
                  'estop': cmd_estop, 'set': cmd_set, 'tone': cmd_tone,
                  'echo': cmd_echo, 'camera': cmd_camera}[args.cmd](node, args)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    json.dump(result, sys.stdout)
    return 0


if __name__ == '__main__':
    sys.exit(main())
