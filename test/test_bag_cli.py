"""`facebot bag`: the whole pipeline offline over a recorded rosbag2, deterministically."""
import json
import re

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg

from facebot import cli, interfaces
from facebot.audio import pcm
from facebot.audio.espeak import EspeakVoice
from facebot.bagio import BagRecorder

T0 = 1_700_000_000_000_000_000
RATE = 16000
CHUNK = 320  # 20 ms


@pytest.fixture(scope="module")
def speech():
    clip = EspeakVoice(voice="en-us+m3").synthesize("Hello robot, how are you today?", sample_rate=RATE).audio
    return np.concatenate([np.zeros(RATE // 2, np.float32), clip, np.zeros(RATE * 3, np.float32)])


@pytest.fixture(scope="module")
def robot_bag(tmp_path_factory, speech):
    """A bag as a robot records it: AudioChunk at 16 kHz, one corrupt chunk, a camera."""
    import cv2

    path = tmp_path_factory.mktemp("in") / "robot_bag"
    topics = {"/mic": "facebot/msg/AudioChunk", "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage"}
    image_cls = interfaces.msg_class("sensor_msgs/msg/CompressedImage")
    with BagRecorder(path, topics) as bag:
        for i, start in enumerate(range(0, len(speech), CHUNK)):
            stamp = T0 + start * 1_000_000_000 // RATE
            msg = interfaces.audio_to_msg(speech[start:start + CHUNK], RATE, stamp)
            if i == 40:
                msg.data = msg.data[:-1]  # odd byte count: malformed
            bag.write("/mic", stamp + 20_000_000, msg)
            if i % 5 == 0:  # 10 fps camera
                ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), i % 255, np.uint8))
                img = image_cls(header=interfaces.make_header(stamp, "camera"), format="jpeg",
                                data=np.frombuffer(jpg.tobytes(), np.uint8))
                bag.write("/camera/image_raw/compressed", stamp, img)
    return path


def run_bag(tmp_path, name, *args):
    out = tmp_path / name
    rc = cli.main(["bag", *args, "--out", str(out), "--no-progress", "--no-video"])
    return rc, out


def messages(bag, topic):
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]


def test_bag_run_is_deterministic_and_aligned(tmp_path, robot_bag, speech):
    args = [str(robot_bag), "--audio-topic", "/mic", "--camera-topic", "/camera/image_raw/compressed"]
    rc1, out1 = run_bag(tmp_path, "a", *args)
    rc2, out2 = run_bag(tmp_path, "b", *args)
    assert rc1 == rc2 == 0
    mcap1, mcap2 = sorted((out1 / "bag").glob("*.mcap")), sorted((out2 / "bag").glob("*.mcap"))
    assert mcap1 and mcap1[0].read_bytes() == mcap2[0].read_bytes()  # identical output bags
    summary = json.loads((out1 / "summary.json").read_text())
    assert summary["counters"]["input_dropped_malformed"] == 1  # counted, the stream went on
    assert summary["counters"]["replies_started"] == 1
    audio_in = messages(out1 / "bag", "/audio/in")
    audio_out = messages(out1 / "bag", "/audio/out")
    flame = messages(out1 / "bag", "/face/flame")
    # Outputs line up with the input: the first frame starts at the first captured sample, the
    # robot's frame k is heard 80 ms + playout delay after input frame k.
    assert audio_in[0][0] == T0
    delay = summary["robot_lead_samples"] * 1_000_000_000 // 24000
    assert [t for t, _ in audio_out[:5]] == [t + delay for t, _ in audio_in[:5]]
    assert flame[0][0] == audio_out[0][0]
    assert len(messages(out1 / "bag", "/camera/image_raw/compressed")) == len(range(0, len(speech), CHUNK * 5))


def test_raw_audio_common_bag_with_format_flag(tmp_path, speech):
    store = interfaces.typestore()
    store.register(get_types_from_msg("uint8[] data", "audio_common_msgs/msg/AudioData"))
    path = tmp_path / "raw_bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/audio", "audio_common_msgs/msg/AudioData", typestore=store)
        cls = store.types["audio_common_msgs/msg/AudioData"]
        for start in range(0, len(speech), CHUNK):
            data = np.frombuffer(pcm.encode(speech[start:start + CHUNK], "S16LE"), np.uint8)
            stamp = T0 + (start + CHUNK) * 1_000_000_000 // RATE  # received when complete
            writer.write(conn, stamp, store.serialize_cdr(cls(data=data), cls.__msgtype__))
    rc, out = run_bag(tmp_path, "o", str(path), "--audio-topic", "/audio")
    assert rc == 2  # raw bytes need a format
    rc, out = run_bag(tmp_path, "o", str(path), "--audio-topic", "/audio", "--audio-format", f"{RATE}:1:S16LE")
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counters"]["replies_started"] == 1
    assert messages(out / "bag", "/audio/in")[0][0] == T0  # stamped back to capture time


@pytest.mark.parametrize("args,needle", [
    (["{bag}", "--audio-topic", "/nope"], "no topic /nope"),
    (["{bag}", "--audio-topic", "/camera/image_raw/compressed"], "has type"),
    (["{missing}"], "no such bag"),
])
def test_bad_bag_arguments_are_refused_in_one_line(tmp_path, robot_bag, capsys, args, needle):
    args = [a.format(bag=robot_bag, missing=tmp_path / "missing") for a in args]
    rc, out = run_bag(tmp_path, "x", *args)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and needle in err and not out.exists()


HOUR_NS = 3600 * 1_000_000_000
YEAR_NS = 365 * 24 * HOUR_NS


def test_a_jump_in_capture_stamps_is_a_discontinuity_not_time_to_fill(tmp_path, speech, monkeypatch):
    """Issue 12.3: chunks stamped +1 h and +10 years. The head driver used to emit every 10 ms
    command across the gap (360,401 for the hour; the years never end). Now the catch-up is
    capped, the timeline restarts and the jumps are counted. A chunk logged +60 years on (past
    2038: no ROS stamp can hold it) is dropped and counted."""
    from facebot.robot.head_controller import HeadController

    path = tmp_path / "jump_bag"
    with BagRecorder(path, {"/mic": "facebot/msg/AudioChunk"}) as bag:
        for i, start in enumerate(range(0, len(speech), CHUNK)):
            logged = T0 + start * 1_000_000_000 // RATE
            header = logged + {60: HOUR_NS, 120: 10 * YEAR_NS}.get(i, 0)  # read in order, stamped ahead
            if i == 150:  # past 2038 no header can hold the stamp: header 0, the reader takes the log time
                header, logged = 0, logged + 60 * YEAR_NS
            bag.write("/mic", logged, interfaces.audio_to_msg(speech[start:start + CHUNK], RATE, header))
    ticks = []
    tick = HeadController.tick

    def counted_tick(self, now_ns):
        ticks.append(now_ns)
        assert len(ticks) < 20_000, "the head driver is filling the gap tick by tick"
        return tick(self, now_ns)

    monkeypatch.setattr(HeadController, "tick", counted_tick)
    rc, out = run_bag(tmp_path, "o", str(path), "--audio-topic", "/mic")
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["head"]["timeline_restarts"] == 4  # two jumps forward, two back
    assert summary["counters"]["input_restarts"] == 4
    assert summary["counters"]["input_dropped_bad_stamp"] == 1
    assert summary["head"]["commands"] == len(ticks) < 5_000


def test_audio_chunks_with_absurd_sample_rates_are_dropped_and_counted(tmp_path, speech):
    """Issue 12.5: AudioChunk sample_rate 1 or 4294967295 was accepted (13 h of audio from 96 KB,
    or a resampler asked for 4 GHz). Now each is dropped, counted, and the stream goes on."""
    path = tmp_path / "rates_bag"
    with BagRecorder(path, {"/mic": "facebot/msg/AudioChunk"}) as bag:
        for i, start in enumerate(range(0, len(speech), CHUNK)):
            stamp = T0 + start * 1_000_000_000 // RATE
            msg = interfaces.audio_to_msg(speech[start:start + CHUNK], RATE, stamp)
            msg.sample_rate = {30: 1, 31: 4294967295, 32: 3999}.get(i, RATE)
            bag.write("/mic", stamp, msg)
    rc, out = run_bag(tmp_path, "o", str(path), "--audio-topic", "/mic")
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counters"]["input_dropped_malformed"] == 3
    assert summary["counters"]["replies_started"] == 1


def test_a_bag_cut_short_is_read_as_far_as_it_goes_with_a_warning(tmp_path, robot_bag, capsys):
    """Issue 12.9: an MCAP without its footer (power loss) was refused whole."""
    import shutil

    cut = tmp_path / "cut_bag"
    shutil.copytree(robot_bag, cut)
    mcap = next(cut.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) * 6 // 10])
    rc, out = run_bag(tmp_path, "o", str(cut), "--audio-topic", "/mic", "--camera-topic", "/camera/image_raw/compressed")
    assert rc == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("facebot: warning:")]
    assert len(warning) == 1 and "cut short" in warning[0] and "ros2 bag reindex" in warning[0]
    summary = json.loads((out / "summary.json").read_text())
    assert any("cut short" in n for n in summary["notes"])
    with AnyReader([robot_bag]) as reader:
        total = sum(c.msgcount for c in reader.connections)
    read = int(re.search(r"reading the (\d+) messages", warning[0]).group(1))
    assert total * 0.4 < read < total * 0.7  # the part before the cut


def test_corrupt_camera_images_are_counted(tmp_path, speech):
    import cv2

    path = tmp_path / "cam_bag"
    topics = {"/mic": "facebot/msg/AudioChunk", "/cam": "sensor_msgs/msg/CompressedImage"}
    image_cls = interfaces.msg_class("sensor_msgs/msg/CompressedImage")
    _, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))
    with BagRecorder(path, topics) as bag:
        for i, start in enumerate(range(0, len(speech), CHUNK)):
            stamp = T0 + start * 1_000_000_000 // RATE
            bag.write("/mic", stamp, interfaces.audio_to_msg(speech[start:start + CHUNK], RATE, stamp))
            if i % 5 == 0:
                data = np.frombuffer(jpg.tobytes(), np.uint8).copy()
                if i % 20 == 0:
                    data[len(data) // 3:] = 0  # garbage after the header: undecodable
                bag.write("/cam", stamp, image_cls(header=interfaces.make_header(stamp, "camera"), format="jpeg", data=data))
    corrupt = len(range(0, len(range(0, len(speech), CHUNK)), 20))
    rc, out = run_bag(tmp_path, "o", str(path), "--audio-topic", "/mic", "--camera-topic", "/cam")
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["counters"]["camera_dropped"] == corrupt


@pytest.mark.parametrize("malformed", [False, True])
def test_a_bag_without_usable_audio_is_one_line_and_exit_2(tmp_path, speech, capsys, malformed):
    """Issue 12.9: exit 0 with an empty output folder."""
    path = tmp_path / "silent_bag"
    with BagRecorder(path, {"/mic": "facebot/msg/AudioChunk", "/other": "facebot/msg/AudioChunk"}) as bag:
        for start in range(0, len(speech), CHUNK * 10):
            stamp = T0 + start * 1_000_000_000 // RATE
            msg = interfaces.audio_to_msg(speech[start:start + CHUNK], RATE, stamp)
            if malformed:
                msg.data = msg.data[:-1]
            bag.write("/mic" if malformed else "/other", stamp, msg)
    rc, out = run_bag(tmp_path, "o", str(path), "--audio-topic", "/mic")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("facebot: error:") and "no usable audio" in err[-1]
    assert ("malformed" in err[-1]) == malformed
    assert not out.exists() and not out.with_name("o.partial").exists()


# ------------------------------------------------------------------------------------------
# fuzz: whatever the bag holds, `facebot bag` ends, in one line or with every drop counted

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

STAMP_FAULTS = {"none": 0, "ahead_1h": HOUR_NS, "ahead_9y": 9 * YEAR_NS, "back_1h": -HOUR_NS}
fuzz_chunks = st.lists(st.tuples(st.sampled_from([80, 320, 1000, 4000]),
                                 st.sampled_from([RATE] * 6 + [1, 3999, 384_001, 4294967295]),
                                 st.sampled_from(list(STAMP_FAULTS) + ["none"] * 8)),
                       min_size=3, max_size=30)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzz_chunks, st.lists(st.integers(0, 2 ** 31), max_size=40), st.sampled_from([None, 0.3, 0.8]))
def test_fuzzed_bags_end_in_bounded_work_with_every_drop_counted(tmp_path_factory, speech, monkeypatch_session,
                                                                chunks, flips, cut):
    """Random chunk sizes, lying rates, stamps jumping hours or years either way, bit flips and
    cuts in the MCAP: exit 0 with the bad chunks counted, or one line and exit 2; never a
    traceback, never a partial folder; head commands bounded by the audio's length plus 3 s per
    timeline restart (the catch-up) plus the reply's drain."""
    from facebot.robot.head_controller import HeadController

    tmp = tmp_path_factory.mktemp("fuzz")
    path, pos, bad_rates = tmp / "bag", 0, 0
    with BagRecorder(path, {"/mic": "facebot/msg/AudioChunk"}) as bag:
        for size, rate, fault in chunks:
            stamp = T0 + pos * 1_000_000_000 // RATE
            header = stamp + STAMP_FAULTS[fault]
            msg = interfaces.audio_to_msg(speech[pos % len(speech):][:size], RATE, header)
            msg.sample_rate, bad_rates = rate, bad_rates + (rate != RATE)
            bag.write("/mic", stamp, msg)
            pos += size
    mcap = next(path.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    for f in flips:
        data[64 + f % (len(data) - 64)] ^= 1 << (f % 8)
    mcap.write_bytes(bytes(data[: int(len(data) * cut)] if cut else data))
    ticks = []
    tick = HeadController.tick
    monkeypatch_session.setattr(HeadController, "tick", lambda self, now: ticks.append(now) or tick(self, now))
    out = tmp / "o"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["bag", str(path), "--audio-topic", "/mic", "--out", str(out), "--no-progress", "--no-video"])
    monkeypatch_session.undo()
    assert not out.with_name("o.partial").exists()
    lines = [line for line in err.getvalue().splitlines() if line.startswith("facebot: error")]
    if rc == 2:
        assert len(lines) == 1 and err.getvalue().strip().splitlines()[-1] == lines[0] and not out.exists()
        return
    assert rc == 0 and not lines
    summary = json.loads((out / "summary.json").read_text())
    restarts = summary["head"]["timeline_restarts"]
    assert len(ticks) == summary["head"]["commands"] <= 100 * (summary["audio_s"] + 3 * restarts + 1)
    if not flips and not cut:
        assert summary["counters"].get("input_dropped_malformed", 0) == bad_rates


@pytest.fixture(scope="module")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
