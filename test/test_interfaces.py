"""facebot's msg/ interfaces: definitions, CDR round trips, conversions, bags."""
from __future__ import annotations

import array
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from facebot import bagio
from facebot import interfaces as fi
from facebot.face.flame import FlameFrame, FrameSource

ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = ROOT / "msg"
MSG_FILES = sorted(MSG_DIR.glob("*.msg"))
SYSTEM_PYTHON = "/usr/bin/python3"

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# Definitions


def test_msg_files_are_the_ones_interfaces_knows():
    assert {p.stem for p in MSG_FILES} == set(fi.MESSAGE_NAMES)
    assert fi.msg_dir().resolve() == MSG_DIR.resolve()


@pytest.mark.parametrize("path", MSG_FILES, ids=lambda p: p.name)
def test_rosbags_parses_msg(path):
    types = get_types_from_msg(path.read_text(), f"facebot/msg/{path.stem}")
    assert list(types) == [f"facebot/msg/{path.stem}"]
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(types)  # resolves std_msgs/Header etc.
    store.generate_msgdef(f"facebot/msg/{path.stem}", ros_version=2)


def test_constants_match_python_enums():
    flame = fi.msg_class(fi.FLAME_PARAMS)
    for src in FrameSource:
        assert getattr(flame, f"SOURCE_{src.name}") == int(src)
    audio = fi.msg_class(fi.AUDIO_CHUNK)
    for enc in fi.AUDIO_ENCODINGS:
        assert getattr(audio, f"ENCODING_{enc}") == enc
    state = fi.msg_class(fi.DIALOGUE_STATE)
    for value, name in fi.DIALOGUE_STATES.items():
        assert getattr(state, f"STATE_{name.upper()}") == value


def test_flame_expression_is_bounded_to_100():
    fields = dict(fi.typestore().fielddefs[fi.FLAME_PARAMS][1])
    node, ((_, (base, _)), bound) = fields["expression"]
    assert (base, bound) == ("float32", 100)


def _system_rosidl_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import rosidl_adapter.parser, rosidl_adapter.msg, rosidl_parser.parser"],
        capture_output=True, text=True,
    )
    if probe.returncode:
        return f"{SYSTEM_PYTHON} lacks rosidl_adapter/rosidl_parser (Debian python3-rosidl): " + (
            probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


ROSIDL_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, tempfile
    from rosidl_adapter.parser import parse_message_file
    from rosidl_adapter.msg import convert_msg_to_idl
    from rosidl_parser.parser import parse_idl_file
    from rosidl_parser.definition import IdlLocator, Message

    root = pathlib.Path(sys.argv[1])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in sys.argv[2:]:
            spec = parse_message_file('facebot', str(root / rel))
            # the path colcon takes: .msg -> .idl (rosidl_adapter) -> parsed IDL (rosidl_parser)
            idl_path = convert_msg_to_idl(root, 'facebot', pathlib.Path(rel), pathlib.Path(tmp))
            idl = parse_idl_file(IdlLocator(pathlib.Path(tmp), idl_path.relative_to(tmp)))
            (message,) = idl.content.get_elements_of_type(Message)
            out[spec.base_type.type] = {
                'constants': {c.name: [c.type, c.value] for c in spec.constants},
                'fields': [[f.name, str(f.type), f.type.array_size, f.type.is_upper_bound]
                           for f in spec.fields],
                'idl_members': [m.name for m in message.structure.members],
                'idl_name': message.structure.namespaced_type.name,
            }
    print(json.dumps(out))
    """
)


def test_debian_rosidl_parses_and_converts_msgs():
    reason = _system_rosidl_available()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    rels = [str(p.relative_to(ROOT)) for p in MSG_FILES]
    res = subprocess.run(
        [SYSTEM_PYTHON, "-c", ROSIDL_SCRIPT, str(ROOT), *rels],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    specs = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(specs) == set(fi.MESSAGE_NAMES)
    for name, spec in specs.items():
        assert spec["idl_name"] == name
        field_names = [f[0] for f in spec["fields"]]
        assert spec["idl_members"] == field_names
        # same fields, same order as rosbags sees them
        assert field_names == [f[0] for f in fi.typestore().fielddefs[f"facebot/msg/{name}"][1]]
        assert field_names[0] == "header"
    flame = {f[0]: f for f in specs["FlameParams"]["fields"]}
    assert flame["expression"][1:] == ["float32[<=100]", 100, True]
    assert flame["eye_pose"][1:] == ["float32[6]", 6, False]
    assert specs["FlameParams"]["constants"]["SOURCE_PERCEIVED"] == ["uint8", 3]
    assert specs["AudioChunk"]["constants"]["ENCODING_S16LE"] == ["string", "S16LE"]
    assert specs["DialogueState"]["constants"]["STATE_OVERLAP"] == ["uint8", 3]


def test_msg_dir_search_order(tmp_path, monkeypatch):
    prefix = tmp_path / "install" / "facebot"
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(tmp_path / "other"), str(prefix)]))
    monkeypatch.delenv("FACEBOT_MSG_DIR", raising=False)
    # a prefix counts only where the ament index says facebot is installed
    assert prefix / "share" / "facebot" / "msg" not in fi.msg_dir_candidates()
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "facebot"
    marker.parent.mkdir(parents=True)
    marker.touch()
    cands = fi.msg_dir_candidates()
    assert cands[0] == MSG_DIR.resolve()
    assert cands[1] == prefix / "share" / "facebot" / "msg"
    assert cands[-1] == Path(sys.prefix) / "share" / "facebot" / "msg"
    # an explicit override wins, but only when it holds every file
    monkeypatch.setenv("FACEBOT_MSG_DIR", str(tmp_path / "empty"))
    assert fi.msg_dir().resolve() == MSG_DIR.resolve()


def test_interfaces_and_bagio_import_no_ros():
    code = (
        "import sys, facebot.interfaces, facebot.bagio\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'rclpy', 'std_msgs', 'builtin_interfaces', 'sensor_msgs', 'rosidl_runtime_py'}"
        " or m == 'facebot.msg']\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------------------
# CDR round trips


def _roundtrip(msg, typename):
    return fi.deserialize(fi.serialize(msg, typename), typename)


def test_dialogue_state_cdr_roundtrip():
    msg = fi.dialogue_state_msg(
        fi.STATE_OVERLAP, 1_234_567_890_123, user_speaking=True, robot_speaking=True,
        barge_in=True, backchannel=False, user_speech_prob=0.75, text="ja, genau — 好",
        step_latency_ms=42.5, backend="onnxruntime", frame_id="dialogue",
    )
    back = fi.dialogue_state_from_msg(_roundtrip(msg, fi.DIALOGUE_STATE))
    assert back == SimpleNamespace(
        stamp_ns=1_234_567_890_123, state=3, user_speaking=True, robot_speaking=True,
        barge_in=True, backchannel=False, user_speech_prob=0.75, text="ja, genau — 好",
        step_latency_ms=42.5, backend="onnxruntime",
    )


finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def flame_frames(draw):
    n = draw(st.integers(1, 100))
    vec = lambda k: np.array(draw(st.lists(finite32, min_size=k, max_size=k)), np.float32)  # noqa: E731
    return FlameFrame(
        expression=vec(n), jaw_pose=vec(3), neck_pose=vec(3), eye_pose=vec(6), eyelids=vec(2),
        stamp_ns=draw(st.integers(0, 2**31 * 10**9 - 1)),
        sequence=draw(st.integers(0, 2**64 - 1)),
        source=draw(st.sampled_from(list(FrameSource))),
    )


def _frames_equal(a: FlameFrame, b: FlameFrame) -> bool:
    arrays = ("expression", "jaw_pose", "neck_pose", "eye_pose", "eyelids")
    return (
        all(np.array_equal(getattr(a, k), getattr(b, k)) and getattr(b, k).dtype == np.float32
            for k in arrays)
        and (a.stamp_ns, a.sequence, a.source) == (b.stamp_ns, b.sequence, b.source)
    )


@FAST
@given(flame_frames())
def test_flame_frame_msg_cdr_roundtrip_is_lossless(frame):
    msg = fi.flame_to_msg(frame, frame_id="face")
    assert msg.header.frame_id == "face"
    assert _frames_equal(frame, fi.flame_from_msg(msg))
    assert _frames_equal(frame, fi.flame_from_msg(_roundtrip(msg, fi.FLAME_PARAMS)))


@FAST
@given(
    st.sampled_from(sorted(fi.AUDIO_ENCODINGS)),
    st.integers(1, 4),
    st.integers(0, 64),
    st.integers(4_000, 384_000),
    st.integers(-(2**31) * 10**9, 2**31 * 10**9 - 1),
    st.data(),
)
def test_audio_chunk_cdr_roundtrip(encoding, channels, frames, rate, stamp_ns, data):
    values = data.draw(st.lists(st.floats(-1.5, 1.5, allow_nan=False), min_size=frames * channels,
                                max_size=frames * channels))
    x = np.array(values, np.float64).reshape(frames, channels)
    msg = fi.audio_to_msg(x, rate, stamp_ns, encoding)
    back = _roundtrip(msg, fi.AUDIO_CHUNK)
    assert fi.stamp_to_ns(back.header.stamp) == stamp_ns
    assert (back.channels, back.sample_rate, back.encoding) == (channels, rate, encoding)
    assert bytes(back.data) == bytes(msg.data)
    y, got_rate = fi.audio_from_msg(back)
    assert got_rate == rate and y.dtype == np.float32 and y.shape == (frames, channels)
    assert np.all(np.abs(y) <= 1.0)
    step = {"S16LE": 2.0**-15, "S32LE": 2.0**-31, "U8": 2.0**-7, "F32LE": 0.0}[encoding]
    # within half a quantisation step, plus clipping at the ends (+1.0 -> largest code)
    err = np.abs(y.astype(np.float64) - np.clip(x, -1.0, 1.0))
    assert np.all(err <= step + 1e-6)


# ------------------------------------------------------------------------------------------
# PCM conversions


@pytest.mark.parametrize("encoding", sorted(fi.AUDIO_ENCODINGS))
def test_pcm_roundtrip_within_quantisation(encoding):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(4800, 2))
    y, rate = fi.audio_from_msg(fi.audio_to_msg(x, 24_000, 0, encoding))
    assert rate == 24_000 and y.shape == x.shape
    step = {"S16LE": 2.0**-15, "S32LE": 2.0**-31, "U8": 2.0**-7, "F32LE": 0.0}[encoding]
    # the largest code is 1 - step: values above it clip there; all others are within step/2
    top = 1.0 - step if step else 1.0
    err = np.abs(y - np.clip(x, -1.0, top))
    assert np.max(err) <= step / 2 + 1e-7  # float32 output adds ~6e-8


@pytest.mark.parametrize(
    "encoding, lo, hi",
    [("S16LE", -32768, 32767), ("S32LE", -(2**31), 2**31 - 1), ("U8", 0, 255)],
)
def test_float_to_int_clips_never_wraps(encoding, lo, hi):
    x = np.array([-1e9, -2.0, -1.0, 1.0, 1.0001, 3.0, 1e9])
    msg = fi.audio_to_msg(x, 16_000, 0, encoding)
    codes = np.frombuffer(bytes(msg.data), fi.AUDIO_ENCODINGS[encoding])
    assert codes.tolist() == [lo, lo, lo, hi, hi, hi, hi]


def test_pcm_known_codes_and_integer_passthrough():
    assert bytes(fi.audio_to_msg(np.array([0.0, 0.5, -0.5]), 8000, 0, "S16LE").data) == \
        np.array([0, 16384, -16384], "<i2").tobytes()
    assert bytes(fi.audio_to_msg(np.array([0.0, -1.0]), 8000, 0, "U8").data) == bytes([128, 0])
    ints = np.array([[1, -2], [32767, -32768]], np.int16)
    msg = fi.audio_to_msg(ints, 8000, 0, "S16LE")
    assert bytes(msg.data) == ints.astype("<i2").tobytes() and msg.channels == 2
    # other integer types are rescaled by their own full scale
    y, _ = fi.audio_from_msg(fi.audio_to_msg(np.array([-128, 0, 64], np.int8), 8000, 0, "S16LE"))
    assert y[:, 0].tolist() == [-1.0, 0.0, 0.5]
    mono = fi.audio_to_msg(np.zeros(1920, np.float32), 24_000, 0)
    assert mono.channels == 1 and len(mono.data) == 3840 and mono.encoding == "S16LE"
    assert mono.header.frame_id == "audio"


def test_audio_to_msg_rejects_bad_input():
    with pytest.raises(ValueError, match="encoding"):
        fi.audio_to_msg(np.zeros(4), 8000, 0, "MP3")
    with pytest.raises(ValueError, match="non-finite"):
        fi.audio_to_msg(np.array([0.0, np.nan]), 8000, 0)
    with pytest.raises(ValueError, match="sample_rate"):
        fi.audio_to_msg(np.zeros(4), 0, 0)
    with pytest.raises(ValueError, match="channels"):
        fi.audio_to_msg(np.zeros((4, 0)), 8000, 0)
    with pytest.raises(ValueError, match=r"\[n\] or \[n, channels\]"):
        fi.audio_to_msg(np.zeros((2, 2, 2)), 8000, 0)
    with pytest.raises(ValueError, match="int32"):
        fi.audio_to_msg(np.zeros(4), 8000, 2**31 * 10**9)


# ------------------------------------------------------------------------------------------
# Malformed messages


def _audio(**kw):
    base = dict(header=fi.make_header(0), sample_rate=24_000, channels=2, encoding="S16LE",
                data=np.zeros(8, np.uint8))
    base.update(kw)
    return fi.msg_class(fi.AUDIO_CHUNK)(**base)


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(encoding="S24LE"), "encoding"),
        (dict(encoding="s16le"), "encoding"),
        (dict(channels=0), "channels is 0"),
        (dict(sample_rate=0), "sample rate 0 Hz is outside 4000..384000"),
        (dict(sample_rate=1), "sample rate 1 Hz is outside"),  # 96 KB would be 13 h of audio
        (dict(sample_rate=3999), "outside"),
        (dict(sample_rate=384_001), "outside"),
        (dict(sample_rate=4294967295), "sample rate 4294967295 Hz is outside"),
        (dict(data=np.zeros(6, np.uint8)), "not a multiple"),
        (dict(encoding="S32LE", data=np.zeros(12, np.uint8)), "not a multiple"),
        (dict(encoding="F32LE", channels=1,
              data=np.frombuffer(np.array([0, np.inf], "<f4").tobytes(), np.uint8).copy()),
         "non-finite"),
    ],
)
def test_malformed_audio_raises_value_error(kw, reason):
    with pytest.raises(ValueError, match=reason) as info:
        fi.audio_from_msg(_audio(**kw))
    assert "\n" not in str(info.value)


def _flame(**kw):
    msg = fi.flame_to_msg(FlameFrame())
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(expression=np.zeros(101, np.float32)), "1..100"),
        (dict(expression=np.zeros(0, np.float32)), "1..100"),
        (dict(expression=np.array([0, np.nan], np.float32)), "non-finite"),
        (dict(jaw_pose=np.array([0, np.inf, 0], np.float32)), "non-finite"),
        (dict(eye_pose=np.zeros(5, np.float32)), "eye_pose must have 6"),
        (dict(eyelids=np.zeros(3, np.float32)), "eyelids must have 2"),
        (dict(source=9), "source"),
    ],
)
def test_malformed_flame_raises_value_error(kw, reason):
    with pytest.raises(ValueError, match=reason) as info:
        fi.flame_from_msg(_flame(**kw))
    assert "\n" not in str(info.value)


def test_flame_to_msg_refuses_non_finite_frames():
    frame = FlameFrame()
    frame.jaw_pose[1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fi.flame_to_msg(frame)


def test_dialogue_state_validation():
    with pytest.raises(ValueError, match="state"):
        fi.dialogue_state_msg(7, 0)
    with pytest.raises(ValueError, match="user_speech_prob"):
        fi.dialogue_state_msg(0, 0, user_speech_prob=float("nan"))
    with pytest.raises(ValueError, match="step_latency_ms"):
        fi.dialogue_state_msg(0, 0, step_latency_ms=-1)


# ------------------------------------------------------------------------------------------
# Time


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_000_000_001, -1, -(10**9) - 5])
def test_stamp_roundtrip(ns):
    stamp = fi.ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 10**9
    assert fi.stamp_to_ns(stamp) == ns


def test_stamp_rejects_out_of_range():
    with pytest.raises(ValueError):
        fi.ns_to_stamp(2**31 * 10**9)
    with pytest.raises(ValueError):
        fi.stamp_to_ns(SimpleNamespace(sec=0, nanosec=10**9))


# ------------------------------------------------------------------------------------------
# Filling foreign message objects (rclpy stores sequences as array.array, fixed arrays as numpy)


def _rclpy_like_flame():
    stamp = SimpleNamespace(sec=0, nanosec=0)
    return SimpleNamespace(
        header=SimpleNamespace(stamp=stamp, frame_id=""), sequence=0, source=0,
        expression=array.array("f"), jaw_pose=np.zeros(3, np.float32),
        neck_pose=np.zeros(3, np.float32), eye_pose=np.zeros(6, np.float32),
        eyelids=np.zeros(2, np.float32),
    )


def test_out_fills_rclpy_like_messages():
    frame = FlameFrame(expression=np.linspace(-1, 1, 50, dtype=np.float32), stamp_ns=3 * 10**9 + 7,
                       sequence=9, source=FrameSource.PERCEIVED)
    out = _rclpy_like_flame()
    assert fi.flame_to_msg(frame, out=out) is out
    assert isinstance(out.expression, array.array) and out.expression.typecode == "f"
    assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == (3, 7, "face")
    assert _frames_equal(frame, fi.flame_from_msg(out))

    audio = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id=""),
                            sample_rate=0, channels=0, encoding="", data=array.array("B"))
    fi.audio_to_msg(np.array([0.25, -0.25]), 48_000, 5, "S32LE", out=audio)
    assert isinstance(audio.data, array.array) and len(audio.data) == 8
    y, rate = fi.audio_from_msg(audio)
    assert rate == 48_000 and y[:, 0].tolist() == [0.25, -0.25]


# ------------------------------------------------------------------------------------------
# Bags


TOPICS = {
    "/facebot/flame": "facebot/msg/FlameParams",
    "/facebot/audio_out": "facebot/msg/AudioChunk",
    "/facebot/dialogue_state": "DialogueState",
    "/facebot/text": "std_msgs/msg/String",
}


def test_bag_recorder_roundtrip_without_registering_types(tmp_path):
    path = tmp_path / "run1"
    frames = [FlameFrame(expression=np.full(50, i, np.float32), stamp_ns=i * 40_000_000, sequence=i,
                         source=FrameSource.MODEL) for i in range(5)]
    with bagio.BagRecorder(path, TOPICS) as bag:
        for f in frames:
            bag.write("/facebot/flame", f.stamp_ns, fi.flame_to_msg(f))
        for i in range(2):
            bag.write("/facebot/audio_out", i * 80_000_000,
                      fi.audio_to_msg(np.zeros(1920), 24_000, i * 80_000_000))
        bag.write("/facebot/dialogue_state", 1, fi.dialogue_state_msg(fi.STATE_SPEAKING, 1, text="hi"))
        with pytest.raises(ValueError, match="not declared"):
            bag.write("/nope", 0, fi.dialogue_state_msg(0, 0))
    assert bag.complete
    assert bag.counts == {"/facebot/flame": 5, "/facebot/audio_out": 2,
                          "/facebot/dialogue_state": 1, "/facebot/text": 0}
    assert (path / "metadata.yaml").exists() and not (path / bagio.INCOMPLETE_MARKER).exists()

    # plain AnyReader: no typestore given, types come from the bag itself
    with AnyReader([path]) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/facebot/flame": "facebot/msg/FlameParams",
            "/facebot/audio_out": "facebot/msg/AudioChunk",
            "/facebot/dialogue_state": "facebot/msg/DialogueState",
            "/facebot/text": "std_msgs/msg/String",
        }
        assert {t: i.msgcount for t, i in reader.topics.items()} == bag.counts
        got = [(c.topic, reader.deserialize(raw, c.msgtype)) for c, _, raw in reader.messages()]
    flames = [fi.flame_from_msg(m) for t, m in got if t == "/facebot/flame"]
    assert len(flames) == 5 and all(_frames_equal(a, b) for a, b in zip(frames, flames))

    assert bagio.bag_topics(path)["/facebot/flame"] == ("facebot/msg/FlameParams", 5)
    items = list(bagio.read_bag(path, topics=["/facebot/dialogue_state"]))
    assert [(t, s) for t, s, _ in items] == [("/facebot/dialogue_state", 1)]
    assert items[0][2].text == "hi"


def test_bag_recorder_aborts_on_exception(tmp_path):
    path = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="boom"):
        with bagio.BagRecorder(path, {"/facebot/flame": "FlameParams"}) as bag:
            bag.write("/facebot/flame", 0, fi.flame_to_msg(FlameFrame()))
            raise RuntimeError("boom")
    assert not bag.complete
    assert not (path / "metadata.yaml").exists()
    assert "boom" in (path / bagio.INCOMPLETE_MARKER).read_text()
    with pytest.raises(Exception):
        list(bagio.read_bag(path))


def test_bag_recorder_refuses_bad_setup(tmp_path):
    with pytest.raises(ValueError, match="unknown message type"):
        bagio.BagRecorder(tmp_path / "x", {"/a": "facebot/msg/Nope"})
    with pytest.raises(ValueError, match="absolute"):
        bagio.BagRecorder(tmp_path / "x", {"a": "FlameParams"})
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        with bagio.BagRecorder(tmp_path / "exists", {"/a": "FlameParams"}):
            pass
    assert not (tmp_path / "x").exists()
