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

"""facebot's ROS 2 nodes driven in-process against the rclpy stand-in (test/ros_standin.py).

Parameters and descriptors, topics, types and QoS, lifecycle transitions, live parameter
changes (accepted and refused), malformed input counted without stopping the node, the
dialogue answering a spoken utterance, the head's limits and e-stop, the display's image.
Every message a node publishes is serialised with the real definition (CDR round trip).
"""
import math
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ros_standin as rs  # noqa: E402

from facebot import interfaces  # noqa: E402
from facebot.audio.espeak import EspeakVoice  # noqa: E402

NS = 1_000_000_000


@pytest.fixture(scope='module')
def ros():
    rs.install()
    from facebot.nodes import (audio_capture, audio_player, dialogue, face_display,  # noqa
                               head_driver)
    yield types.SimpleNamespace(audio_capture=audio_capture, audio_player=audio_player,
                                dialogue=dialogue, head_driver=head_driver,
                                face_display=face_display, msg=sys.modules['facebot.msg'],
                                std=sys.modules['std_msgs.msg'],
                                sensor=sys.modules['sensor_msgs.msg'])
    rs.uninstall()


@pytest.fixture(scope='module')
def dialogue_node(ros):
    node = ros.dialogue.DialogueNode()
    assert node.trigger_configure() == rs.TransitionCallbackReturn.SUCCESS
    yield node
    node.close()


def param(name, value):
    return rs.Parameter(name, value=value)


def set_param(node, name, value):
    return node.set_parameters([param(name, value)])[0]


def assert_serialisable(pub, last=5):
    for msg in pub.messages[-last:]:
        rs.cdr_round_trip(msg)


def check_descriptors(node, specs):
    for spec in specs:
        desc = node.describe_parameter(spec.name)
        assert desc.description, spec.name
        assert desc.read_only == spec.read_only, spec.name
        if spec.lo is not None:
            rng = desc.integer_range if isinstance(spec.default, int) else \
                desc.floating_point_range
            assert len(rng) == 1 and rng[0].from_value == spec.lo and rng[0].to_value == spec.hi


def audio_msg(ros, samples, rate, stamp_ns, encoding='S16LE'):
    return interfaces.audio_to_msg(samples, rate, stamp_ns, encoding, 'mic',
                                   out=ros.msg.AudioChunk())


def flame_msg(ros, stamp_ns, jaw=0.2, seq=0, expression=None):
    from facebot.face.flame import FlameFrame

    f = FlameFrame.neutral()
    f.jaw_pose[0] = jaw
    if expression is not None:
        f.expression[:] = expression
    f.stamp_ns, f.sequence = stamp_ns, seq
    return interfaces.flame_to_msg(f, out=ros.msg.FlameParams())


# ------------------------------------------------------------------------------------------
# dialogue


def test_dialogue_parameters_topics_and_qos(ros, dialogue_node):
    node = dialogue_node
    check_descriptors(node, ros.dialogue.PARAMS)
    assert node.get_parameter('backend').value == 'scripted'
    pubs = {p.topic: p for p in node.publishers}
    assert pubs['/audio/out'].msg_type is ros.msg.AudioChunk
    assert pubs['/face/flame'].msg_type is ros.msg.FlameParams
    assert pubs['/dialogue/state'].msg_type is ros.msg.DialogueState
    assert pubs['/dialogue/text'].msg_type is ros.std.String
    assert pubs['/diagnostics'].msg_type.__name__ == 'DiagnosticArray'
    assert isinstance(pubs['/audio/out'], rs.LifecyclePublisher)
    subs = {s.topic: s for s in node.subscriptions}
    assert subs['/audio/in'].msg_type is ros.msg.AudioChunk
    assert subs['/audio/in'].qos.reliability == rs.ReliabilityPolicy.BEST_EFFORT
    assert subs['/camera/image_raw'].msg_type is ros.sensor.Image
    assert subs['/camera/image_raw'].qos.reliability == rs.ReliabilityPolicy.BEST_EFFORT
    assert subs['/audio/played'].msg_type is ros.msg.AudioChunk


def test_dialogue_lifecycle(ros, dialogue_node):
    node = dialogue_node
    assert node.lifecycle_state == 'inactive'
    assert node.timer is None
    assert node.trigger_activate() == rs.TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == 'active'
    assert node.timer.timer_period_ns == 80_000_000  # 12.5 Hz
    assert all(p.enabled for p in node.pubs.values())
    assert node.trigger_deactivate() == rs.TransitionCallbackReturn.SUCCESS
    assert node.timer is None and not any(p.enabled for p in node.pubs.values())
    # inactive: input is ignored, nothing is published
    node.on_audio(audio_msg(ros, np.zeros(480, np.float32), 24000, rs.CLOCK.ns))
    assert not node._pending
    assert node.trigger_cleanup() == rs.TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == 'unconfigured' and node.backend is None
    assert not [s for s in node.subscriptions if s.topic == '/audio/in']
    assert node.trigger_configure() == rs.TransitionCallbackReturn.SUCCESS


def test_dialogue_configure_failure_and_option_pass_through(ros, monkeypatch):
    bad = ros.dialogue.DialogueNode(parameter_overrides=[param('backend', 'no_such_backend')])
    assert bad.trigger_configure() == rs.TransitionCallbackReturn.FAILURE
    assert bad.lifecycle_state == 'unconfigured'
    assert any('no_such_backend' in line for level, line in bad.get_logger().lines
               if level == 'error')
    seen = {}

    def fake_make_backend(options):
        seen['options'] = options
        from facebot.pipeline.backends import make_backend
        return make_backend(type(options)(name='scripted', scripted=options.scripted))

    monkeypatch.setattr(ros.dialogue, 'make_backend', fake_make_backend)
    node = ros.dialogue.DialogueNode(parameter_overrides=[
        param('backend', 'model'), param('weights_path', '/w/model.safetensors'),
        param('engine_path', '/w/graphs'), param('model_config', 'small'),
        param('temperature', 0.6), param('top_k', 50), param('runtime', 'tensorrt'),
        param('precision', 'fp16'), param('force_engine_update', True),
        param('script_lines', ['Hi there.', 'Bye now.'])])
    assert node.trigger_configure() == rs.TransitionCallbackReturn.SUCCESS
    opts = seen['options']
    assert opts.name == 'model'
    assert opts.extras == {'weights_path': '/w/model.safetensors', 'engine_path':
                           '/w/graphs', 'model_config': 'small', 'temperature': 0.6,
                           'top_k': 50, 'runtime': 'tensorrt', 'precision': 'fp16',
                           'force_engine_update': True}
    from facebot.pipeline.backends import model_options
    mo = model_options(opts.extras)  # the node's parameters reach the model backend's options
    assert (mo.runtime, mo.export_dir, mo.precision, mo.force_engine_update) == \
        ('tensorrt', '/w/graphs', 'fp16', True)
    assert opts.scripted.replies == ('Hi there.', 'Bye now.')
    node.publish_diagnostics()
    values = {kv.key: kv.value for kv in node.diag_pub.messages[-1].status[0].values}
    assert values['weights_path'] == '/w/model.safetensors'
    node.close()


def test_parameter_type_of_an_override_is_enforced(ros):
    with pytest.raises(rs.InvalidParameterTypeException):  # 1 is an int, temperature a double
        ros.dialogue.DialogueNode(parameter_overrides=[param('temperature', 1)])
    with pytest.raises(rs.InvalidParameterValueException):  # out of the descriptor's range
        ros.dialogue.DialogueNode(parameter_overrides=[param('temperature', 7.0)])


def test_dialogue_live_parameters(ros, dialogue_node):
    node = dialogue_node
    assert set_param(node, 'temperature', 1.1).successful
    assert node.params['temperature'] == 1.1
    r = set_param(node, 'temperature', 3.5)
    assert not r.successful and 'range' in r.reason
    r = set_param(node, 'output_encoding', 'MP3')
    assert not r.successful and 'output_encoding' in r.reason
    assert node.params['output_encoding'] == 'S16LE'
    r = set_param(node, 'playout_delay_ms', -5.0)
    assert not r.successful
    assert set_param(node, 'playout_delay_ms', 120.0).successful
    assert set_param(node, 'playout_delay_ms', 80.0).successful
    r = set_param(node, 'top_k', 2.5)
    assert not r.successful and 'type' in r.reason
    assert set_param(node, 'backend', 'scripted').successful  # applies at the next configure


def _utterance(rate=16000):
    clip = EspeakVoice(voice='en-us', rate_wpm=150).synthesize(
        'Hello robot. Can you tell me something about yourself please?', sample_rate=rate)
    return clip.audio.astype(np.float32)


def test_dialogue_answers_a_spoken_utterance(ros, dialogue_node):
    node = dialogue_node
    assert node.trigger_activate() == rs.TransitionCallbackReturn.SUCCESS
    for pub in node.pubs.values():
        pub.messages.clear()
    rate, chunk = 16000, 320  # 20 ms chunks at 16 kHz: the node re-frames and resamples
    speech = _utterance(rate)
    signal = np.concatenate([np.zeros(rate // 2), speech, np.zeros(rate * 5)]).astype(np.float32)
    t0 = rs.CLOCK.ns
    stamps = []
    for i, start in enumerate(range(0, signal.shape[0] - chunk + 1, chunk)):
        stamp = t0 + start * NS // rate
        node.on_audio(audio_msg(ros, signal[start:start + chunk], rate, stamp))
        rs.CLOCK.ns = stamp + chunk * NS // rate
        if i % 4 == 3:
            node.on_tick()
        stamps.append(stamp)
    states = [m.state for m in node.pubs['state'].messages]
    assert 1 in states, 'the user was never heard (LISTENING)'
    assert 2 in states, 'the robot never answered (SPEAKING)'
    audio = [interfaces.audio_from_msg(m)[0][:, 0] for m in node.pubs['audio'].messages]
    assert max(float(np.abs(a).max()) for a in audio) > 0.1
    texts = [m.data for m in node.pubs['text'].messages]
    assert texts, 'no inner-monologue text published'
    # time rules: audio frame k is heard capture(k) + 80 ms + playout delay (80 ms here);
    # the two FLAME frames of a step are stamped at that time and 40 ms later
    states_msgs = node.pubs['state'].messages
    for st, au in zip(states_msgs, node.pubs['audio'].messages):
        cap = interfaces.stamp_to_ns(st.header.stamp)
        assert interfaces.audio_stamp_ns(au) == cap + 80_000_000 + 80_000_000
    flames = node.pubs['flame'].messages
    assert len(flames) == 2 * len(audio)
    f0, f1 = flames[0], flames[1]
    assert interfaces.stamp_to_ns(f1.header.stamp) - interfaces.stamp_to_ns(
        f0.header.stamp) == 40_000_000
    jaw = [m.jaw_pose[0] for m in flames]
    speaking = [i for i, s in enumerate(states) if s == 2]
    assert max(jaw[2 * i] for i in speaking) > 0.05, 'the jaw does not move with the voice'
    for pub in node.pubs.values():
        assert_serialisable(pub)
    node.publish_diagnostics()
    diag = node.diag_pub.messages[-1]
    values = {kv.key: kv.value for kv in diag.status[0].values}
    assert 'real-time factor' in values and 'step ms p50/p99/max' in values
    assert values['backend'].startswith('scripted')
    rs.cdr_round_trip(diag)
    assert node.trigger_deactivate() == rs.TransitionCallbackReturn.SUCCESS


def test_dialogue_playout_feedback_raises_the_delay(ros, dialogue_node):
    node = dialogue_node
    node.trigger_activate()
    t = rs.CLOCK.ns
    for k in range(3):
        node.on_audio(audio_msg(ros, np.zeros(1920, np.float32), 24000, t + k * 80_000_000))
    rs.CLOCK.ns = t + 3 * 80_000_000
    node.on_tick()
    sent = node.pubs['audio'].messages[-1]
    played = ros.msg.AudioChunk()
    lag = 400_000_000  # the player says: heard 400 ms after it was published
    interfaces.make_header(rs.CLOCK.ns + lag, 'speaker', played.header)
    played.sample_rate, played.channels = sent.sample_rate, sent.channels
    played.encoding, played.data = sent.encoding, sent.data
    node.on_played(played)
    node.on_tick()
    frame_end = t + 2 * 80_000_000 + 80_000_000
    expect = rs.CLOCK.ns + lag - frame_end
    assert node.playout_delay_ns == pytest.approx(max(expect, 80_000_000), abs=1e6)
    assert node.playout_delay_ns > 80_000_000
    node.trigger_deactivate()


def test_dialogue_survives_malformed_input(ros, dialogue_node):
    node = dialogue_node
    node.trigger_activate()
    before = node.counts['audio_refused']
    good = audio_msg(ros, np.zeros(480, np.float32), 24000, rs.CLOCK.ns)
    bad_encoding = audio_msg(ros, np.zeros(480, np.float32), 24000, rs.CLOCK.ns)
    bad_encoding.encoding = 'MP3'
    odd_size = audio_msg(ros, np.zeros(480, np.float32), 24000, rs.CLOCK.ns)
    odd_size.data = odd_size.data[:-1]
    empty = audio_msg(ros, np.zeros(0, np.float32), 24000, rs.CLOCK.ns)
    no_rate = audio_msg(ros, np.zeros(480, np.float32), 24000, rs.CLOCK.ns)
    no_rate.sample_rate = 0
    nan = audio_msg(ros, np.zeros(1920, np.float32), 24000, rs.CLOCK.ns, 'F32LE')
    nan.data = list(np.full(1920, np.nan, '<f4').tobytes())
    for msg in (bad_encoding, odd_size, empty, no_rate, nan):
        node.on_audio(msg)
    assert node.counts['audio_refused'] - before == 5
    img = ros.sensor.Image()
    img.height, img.width, img.encoding, img.step = 4, 4, 'rgb8', 12
    img.data = bytes(47)
    node.on_image(img)
    img.encoding = 'yuv422'
    node.on_image(img)
    img.encoding, img.data, img.width, img.height = 'rgb8', bytes(0), 0, 0
    node.on_image(img)
    assert node.counts['images_refused'] == 3
    good_img = ros.sensor.Image()
    good_img.height, good_img.width, good_img.encoding, good_img.step = 2, 3, 'bgr8', 9
    good_img.data = bytes(range(18))
    node.on_image(good_img)
    rgb, _ = node._image
    assert rgb.shape == (2, 3, 3) and rgb[0, 0].tolist() == [2, 1, 0]
    node.on_audio(good)
    n = node.counts['steps']
    rs.CLOCK.advance(200_000_000)
    node.on_audio(audio_msg(ros, np.zeros(1920 * 2, np.float32), 24000, rs.CLOCK.ns))
    node.on_tick()
    assert node.counts['steps'] > n  # the stream goes on
    warnings = [line for level, line in node.get_logger().lines if level == 'warn']
    assert any('refused' in w for w in warnings)
    node.trigger_deactivate()


# ------------------------------------------------------------------------------------------
# head driver


def test_head_driver_topics_parameters_and_limits(ros):
    node = ros.head_driver.HeadDriverNode()
    check_descriptors(node, node.specs)
    assert node.get_parameter('joints.jaw.gain').value == pytest.approx(1.1)
    pubs = {p.topic: p for p in node.publishers}
    assert pubs['/head_position_controller/commands'].msg_type is ros.std.Float64MultiArray
    assert pubs['/head/joint_commands'].msg_type is ros.sensor.JointState
    assert {s.topic for s in node.subscriptions} == {'/face/flame', '/head/estop'}
    assert [s.srv_name for s in node.services] == ['/head/set_estop']
    tick = next(t for t in node.timers if t.timer_period_ns == 10_000_000)
    ctl = node.controller
    lower, upper = ctl.lower, ctl.upper
    rng = np.random.default_rng(1)
    t = rs.CLOCK.ns
    for k in range(150):
        rs.CLOCK.ns = t + k * 10_000_000
        if k % 4 == 0:
            node.on_flame(flame_msg(ros, rs.CLOCK.ns + 40_000_000, jaw=float(rng.uniform(-3, 3)),
                                    seq=k, expression=rng.uniform(-9, 9, 50)))
        tick.callback()
    cmds = np.array([m.data for m in node.pubs['forward_command'].messages])
    assert cmds.shape == (150, 12)
    assert (cmds >= lower - 1e-9).all() and (cmds <= upper + 1e-9).all()
    vel = np.diff(cmds, axis=0) / 0.01
    assert (np.abs(vel) <= ctl.max_velocity + 1e-6).all()
    assert_serialisable(node.pubs['forward_command'])
    assert_serialisable(node.pubs['joint_state'])
    # malformed FLAME messages are counted, never used
    bad = flame_msg(ros, rs.CLOCK.ns)
    bad.jaw_pose = np.array([np.nan, 0, 0], np.float32)
    node.on_flame(bad)
    bad = flame_msg(ros, rs.CLOCK.ns)
    bad.source = 9
    node.on_flame(bad)
    bad = flame_msg(ros, rs.CLOCK.ns)
    bad.expression = [float('inf')] * 10
    node.on_flame(bad)
    assert node.counts['flame_malformed'] == 3
    node.publish_diagnostics()
    rs.cdr_round_trip(node.diag_pub.messages[-1])


def test_head_driver_estop_and_live_limits(ros):
    node = ros.head_driver.HeadDriverNode(parameter_overrides=[
        param('output_forms', ['forward_command', 'trajectory'])])
    tick = next(t for t in node.timers if t.timer_period_ns == 10_000_000)
    t = rs.CLOCK.ns
    for k in range(40):
        rs.CLOCK.ns = t + k * 10_000_000
        node.on_flame(flame_msg(ros, rs.CLOCK.ns + 40_000_000, jaw=0.3, seq=k))
        tick.callback()
    traj = node.pubs['trajectory'].messages[-1]
    assert len(traj.joint_names) == 12 and len(traj.points) == 1
    assert_serialisable(node.pubs['trajectory'])
    srv = node.services[0]
    resp = srv.call(rs.SetBool.Request(data=True))
    assert resp.success and node.controller.estop
    for k in range(40, 140):
        rs.CLOCK.ns = t + k * 10_000_000
        node.on_flame(flame_msg(ros, rs.CLOCK.ns + 40_000_000, jaw=0.0, seq=k))
        tick.callback()
    assert node.controller.mode == 'estop'
    last = np.array(node.pubs['forward_command'].messages[-1].data)
    prev = np.array(node.pubs['forward_command'].messages[-2].data)
    assert np.allclose(last, prev)  # braked to rest and holding
    msg = ros.std.Bool()
    msg.data = False
    node.on_estop_topic(msg)
    assert not node.controller.estop
    # live: accepted, refused by range, refused by the component's own validation
    assert set_param(node, 'lead_ms', 60.0).successful
    assert node.controller.config.lead_ms == 60.0
    assert set_param(node, 'joints.jaw.max_velocity', 4.0).successful
    assert node.controller.config.joints[3].max_velocity == 4.0
    r = set_param(node, 'joints.jaw.upper', 9.0)
    assert not r.successful and 'range' in r.reason
    r = set_param(node, 'joints.jaw.lower', 0.5)  # above upper (0.4)
    assert not r.successful and 'jaw' in r.reason
    r = set_param(node, 'estop_mode', 'explode')
    assert not r.successful
    r = set_param(node, 'control_rate_hz', 50.0)
    assert not r.successful and 'read-only' in r.reason
    assert node.controller.config.joints[3].lower == 0.0
    rs.CLOCK.ns += 10_000_000
    tick.callback()
    cmd = np.array(node.pubs['forward_command'].messages[-1].data)
    assert (cmd >= node.controller.lower).all() and (cmd <= node.controller.upper).all()


# ------------------------------------------------------------------------------------------
# face display


def test_face_display_image_and_live_look(ros):
    node = ros.face_display.FaceDisplayNode()
    check_descriptors(node, node.specs)
    tick = next(t for t in node.timers if t.timer_period_ns == 40_000_000)  # 25 fps
    pub = node.image_pub
    assert pub.topic == '/face/image' and pub.msg_type is ros.sensor.Image
    tick.callback()
    img = pub.messages[-1]
    assert (img.width, img.height, img.encoding, img.step) == (480, 480, 'rgb8', 1440)
    assert len(img.data) == 480 * 480 * 3
    neutral = bytes(img.data)
    now = rs.CLOCK.ns
    node.on_flame(flame_msg(ros, now + 40_000_000, jaw=0.3))  # shown 40 ms from now
    tick.callback()
    assert bytes(pub.messages[-1].data) == neutral  # not yet due
    rs.CLOCK.ns = now + 40_000_000
    tick.callback()
    assert bytes(pub.messages[-1].data) != neutral  # the open mouth, on time
    assert interfaces.stamp_to_ns(pub.messages[-1].header.stamp) == rs.CLOCK.ns
    assert set_param(node, 'gaze_gain', 3.0).successful
    assert not set_param(node, 'gaze_gain', 20.0).successful
    r = set_param(node, 'geometry.eye_width', 0.0)
    assert not r.successful and 'eye_width' in r.reason
    bad = flame_msg(ros, now)
    bad.eyelids = np.array([np.nan, 0.0], np.float32)
    node.on_flame(bad)
    assert node.counts['refused'] == 1
    rs.cdr_round_trip(pub.messages[-1])


# ------------------------------------------------------------------------------------------
# audio nodes (sounddevice stand-in: no sound card here)


def _fake_sounddevice(rate=16000, blocks=50):
    sd = types.ModuleType('sounddevice')
    sd.PortAudioError = type('PortAudioError', (Exception,), {})
    sd.written = []

    def query_devices(device=None, kind=None):
        return {'name': 'fake', 'default_samplerate': float(rate)}

    class InputStream:
        def __init__(self, device=None, samplerate=None, channels=None, blocksize=None,
                     dtype=None, callback=None):
            self.rate, self.block, self.cb, self.ch = samplerate, blocksize, callback, channels

        def _run(self):
            t = 10.0
            for k in range(blocks):
                block = np.full((self.block, self.ch), 0.25 * math.sin(k), np.float32)
                self.cb(block, self.block, types.SimpleNamespace(
                    currentTime=t, inputBufferAdcTime=t - 0.005),
                    types.SimpleNamespace(input_overflow=False))
                t += self.block / self.rate

        def __enter__(self):
            threading.Thread(target=self._run, daemon=True).start()
            return self

        def __exit__(self, *exc):
            return False

    class OutputStream:
        latency = 0.03

        def __init__(self, device=None, samplerate=None, channels=None, dtype=None,
                     latency=None):
            pass

        def start(self):
            pass

        def write(self, data):
            sd.written.append(np.array(data))
            return False

        def stop(self):
            pass

        def close(self):
            pass

    sd.query_devices, sd.InputStream, sd.OutputStream = query_devices, InputStream, OutputStream
    return sd


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_audio_capture_publishes_chunks(ros, monkeypatch):
    monkeypatch.setitem(sys.modules, 'sounddevice', _fake_sounddevice())
    node = ros.audio_capture.AudioCaptureNode(parameter_overrides=[param('channels', 2)])
    check_descriptors(node, ros.audio_capture.PARAMS)
    pub = node.pub
    assert pub.topic == '/audio/in' and pub.qos.reliability == rs.ReliabilityPolicy.BEST_EFFORT
    assert _wait(lambda: len(pub.messages) >= 20)
    node.close()
    msgs = pub.messages[:20]
    assert all(m.sample_rate == 16000 and m.channels == 2 and m.encoding == 'S16LE'
               for m in msgs)
    assert all(len(m.data) == 320 * 2 * 2 for m in msgs)
    stamps = [interfaces.audio_stamp_ns(m) for m in msgs]
    assert np.allclose(np.diff(stamps), 20_000_000, atol=1000)
    assert_serialisable(pub)
    assert not set_param(node, 'sample_rate', 48000).successful  # read-only
    assert set_param(node, 'encoding', 'F32LE').successful
    assert not set_param(node, 'encoding', 'S24').successful


def test_audio_player_plays_and_reports(ros, monkeypatch):
    sd = _fake_sounddevice()
    monkeypatch.setitem(sys.modules, 'sounddevice', sd)
    node = ros.audio_player.AudioPlayerNode(parameter_overrides=[
        param('hold_until_stamp', False)])
    check_descriptors(node, ros.audio_player.PARAMS)
    sub = node.subscriptions[0]
    assert sub.topic == '/audio/out' and sub.msg_type is ros.msg.AudioChunk
    assert node.played_pub.topic == '/audio/played'
    stamp = rs.CLOCK.ns
    tone = (0.3 * np.sin(np.arange(1920) / 5)).astype(np.float32)
    node.on_audio(audio_msg(ros, tone, 24000, stamp))
    stereo16k = np.stack([tone[:1280], tone[:1280]], axis=1)
    node.on_audio(audio_msg(ros, stereo16k, 16000, stamp + 80_000_000))
    bad = audio_msg(ros, tone, 24000, stamp)
    bad.channels = 0
    node.on_audio(bad)
    assert node.counts['refused'] == 1
    assert _wait(lambda: len(node.played_pub.messages) == 2)
    node.close()
    played = node.played_pub.messages[0]
    assert bytes(played.data) == bytes(audio_msg(ros, tone, 24000, stamp).data)
    assert interfaces.audio_stamp_ns(played) >= rs.CLOCK.ns + 29_000_000  # now + latency
    assert sum(w.shape[0] for w in sd.written) >= 1920 + 1000  # soxr keeps a tail back
    assert_serialisable(node.played_pub)


def test_every_node_main_starts_and_shuts_down(ros, monkeypatch):
    monkeypatch.setitem(sys.modules, 'sounddevice', _fake_sounddevice(blocks=2))
    for module in (ros.audio_capture, ros.audio_player, ros.dialogue, ros.head_driver,
                   ros.face_display):
        assert module.main(args=[]) == 0  # the stand-in's spin ends like Ctrl-C
        assert not sys.modules['rclpy'].ok()
