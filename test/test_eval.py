"""`facebot eval` against ground truth: conversations laid out from espeak clips at known
samples on both channels, with a face track whose lag is known, as a run folder and as a bag.

Tolerances (what the README states): speech edges within EDGE_S of the clip's first/last
audible sample; counts and turn-over rates exact; latencies within LATENCY_S; overlap and
speech time within TIME_S; lip-sync lag within LAG_MS; FLAME rate, jitter, missing and refused
frames exact (they are read, not estimated).
"""
import json
import shutil

import numpy as np
import pytest

from facebot import cli, interfaces
from facebot.audio.files import write_wav
from facebot.bagio import BagRecorder
from facebot.eval.evaluate import evaluate
from facebot.eval.face import voice_envelope
from facebot.eval.inputs import RATE, load
from facebot.eval.scenarios import SITUATIONS, ClipTrack, make_scenario
from facebot.eval.segments import Segment, speech_segments
from facebot.eval.turns import EventRules, find_events, summarize
from facebot.face.flame import FlameFrame, FlameTrack

EDGE_S = 0.05
LATENCY_S = 0.06
TIME_S = 0.15
LAG_MS = 10.0
T0 = 1_700_000_000_000_000_000
ROBOT_VOICE = dict(voice="en-us+f5", rate_wpm=140, pitch=50)
JAW_LAG_S = 0.06  # the jaw as shown trails the voice by this much
COMMAND_LEAD_S = 0.03  # the jaw command reaches its target this much before the voice
REFUSED = 7


def _conversation():
    """Both channels and the design: every situation the metrics know, at known times."""
    user, robot = ClipTrack(), ClipTrack(**ROBOT_VOICE)
    e = user.say("Hello robot how are you doing today", 0.5)
    r = robot.say("I am very well thank you for asking me", e + 0.6)  # turn-taking, 0.6 s
    e = user.say("I went to the market this morning", r + 1.5)
    robot.say("yeah", e + 0.3)  # a robot backchannel in a held pause
    e = user.say("and bought some fresh bread", e + 1.0)
    r_start = e + 0.9  # turn-taking, 0.9 s
    u = r_start + 1.5
    robot.say("That sounds lovely and I like fresh bread very much indeed", r_start, cut_s=u + 0.3 - r_start)
    e = user.say("Wait I have another question for you", u)  # interruption, stop after 0.3 s
    r = robot.say("Of course what is your question", e + 0.5)  # response 0.5 s after it
    e = user.say("My favourite colour is blue", r + 1.2)
    robot.say("Blue is a nice colour", e + 0.4)  # takes the turn in a 1.2 s pause
    e = user.say("and also green like the grass", e + 1.2)
    r = robot.say("Green is nice too", e + 0.7)  # turn-taking, 0.7 s
    r_start = r + 1.0
    r = robot.say("Let me tell you a story about a robot who lived by the sea and loved the waves", r_start)
    user.say("yeah", r_start + 1.5)  # a user backchannel; the robot keeps talking
    duration = r + 1.0
    return user, robot, duration


def _truth_segments(track):
    return [Segment(u.start_s, u.end_s) for u in track.utterances]


def _face(robot_audio, duration):
    """FLAME frames showing the voice envelope of JAW_LAG_S earlier (each frame the mean over
    the 40 ms it is shown), with stamp jitter and three dropped frames; and 100 Hz jaw
    commands reaching the envelope COMMAND_LEAD_S early."""
    env = voice_envelope(robot_audio)  # 10 ms bins
    rng = np.random.default_rng(0)
    n = int(duration / 0.04) - 4
    keep = np.setdiff1d(np.arange(n), [100, 101, 300])
    t = keep * 0.04 + np.round(rng.normal(0, 0.002, keep.shape[0]), 2)  # jitter in whole 10 ms bins
    bins = np.round((t - JAW_LAG_S) / 0.01).astype(int)
    jaw = [env[max(b, 0):max(b + 4, 0)].mean() if b + 4 > 0 else 0.0 for b in bins]
    frames = [FlameFrame(jaw_pose=np.array([j, 0, 0], np.float32), stamp_ns=T0 + int(round(ti * 1e9)), sequence=int(k))
              for ti, j, k in zip(t, jaw, keep)]
    lead = int(round(COMMAND_LEAD_S / 0.01))
    cmd = np.concatenate([env[lead:], np.zeros(lead)])
    return frames, t, np.arange(env.shape[0]) * 0.01, cmd


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    user, robot, duration = _conversation()
    ua, ra = user.audio(duration), robot.audio(duration)
    frames, flame_t, t_cmd, cmd = _face(ra, duration)
    run = root / "run"
    run.mkdir()
    write_wav(run / "user.wav", ua, RATE, subtype="FLOAT")
    write_wav(run / "robot.wav", ra, RATE, subtype="FLOAT")
    FlameTrack.from_frames(frames).save_npz(run / "flame.npz")
    with open(run / "joints.csv", "w") as f:
        f.write("send_time_s,show_time_s,mode,jaw.pos,jaw.vel,jaw.acc\n")
        f.writelines(f"{t - 0.04:.4f},{t:.4f},0,{c:.6f},0,0\n" for t, c in zip(t_cmd, cmd))
    (run / "summary.json").write_text(json.dumps({"t0_ns": T0, "head": {"lead_ms": 40.0, "counters": {
        "frames_refused": REFUSED, "refused_late": REFUSED}}}))
    bag = root / "bag"
    _write_bag(bag, ua, ra, frames)
    truth_user, truth_robot = _truth_segments(user), _truth_segments(robot)
    events = find_events(truth_user, truth_robot, duration, EventRules())
    return {"run": run, "bag": bag, "user": truth_user, "robot": truth_robot, "events": events, "flame_t": flame_t,
            "summary": summarize(events, truth_user, truth_robot, duration), "root": root}


def _write_bag(path, ua, ra, frames, rate=16000, chunk_s=0.02):
    """The same conversation as a robot records it: 16 kHz AudioChunks in 20 ms pieces."""
    from scipy.signal import resample_poly

    u16, r16 = resample_poly(ua, 2, 3).astype(np.float32), resample_poly(ra, 2, 3).astype(np.float32)
    topics = {"/audio/in": "facebot/msg/AudioChunk", "/audio/out": "facebot/msg/AudioChunk",
              "/face/flame": "facebot/msg/FlameParams"}
    n = int(rate * chunk_s)
    with BagRecorder(path, topics) as bag:
        for start in range(0, len(u16), n):
            stamp = T0 + start * 1_000_000_000 // rate
            bag.write("/audio/in", stamp, interfaces.audio_to_msg(u16[start:start + n], rate, stamp))
            bag.write("/audio/out", stamp, interfaces.audio_to_msg(r16[start:start + n], rate, stamp))
        for f in frames:
            bag.write("/face/flame", f.stamp_ns, interfaces.flame_to_msg(f))


@pytest.fixture(scope="module")
def run_result(truth):
    return evaluate(load(truth["run"]))


def test_the_design_is_what_the_test_claims(truth):
    """The truth itself (exact clip times) shows each situation once or twice."""
    s = truth["summary"]
    assert (s["pause"]["n"], s["pause"]["tor"]) == (2, 0.5)
    assert s["backchannel"]["n"] == 1
    assert (s["turn_taking"]["n"], s["turn_taking"]["tor"]) == (3, 1.0)
    assert s["turn_taking"]["latency_s"]["mean"] == pytest.approx((0.6 + 0.9 + 0.7) / 3, abs=1e-6)
    it = s["interruption"]
    assert (it["n"], it["stop_rate"], it["tor"]) == (1, 1.0, 1.0)
    assert it["stop_latency_s"]["mean"] == pytest.approx(0.3, abs=1e-3)
    assert it["latency_s"]["mean"] == pytest.approx(0.5, abs=1e-6)
    assert (s["user_backchannel"]["n"], s["user_backchannel"]["yield_rate"]) == (1, 0.0)
    assert s["overlap_s"] > 1.0


def _close(found, truth, tol):
    return all(min(abs(f.start_s - t.start_s) + abs(f.end_s - t.end_s) for f in found) <= tol for t in truth)


def test_speech_edges_within_tolerance(truth, run_result):
    for side in ("user", "robot"):
        found = [Segment(a, b) for a, b in run_result["segments"][side]]
        for t in truth[side]:
            best = min(found, key=lambda f: abs(f.start_s - t.start_s) + abs(f.end_s - t.end_s))
            assert abs(best.start_s - t.start_s) <= EDGE_S and abs(best.end_s - t.end_s) <= EDGE_S, (side, t, best)


def _compare(measured, expected):
    for key in ("user_speech_s", "robot_speech_s", "overlap_s"):
        assert measured[key] == pytest.approx(expected[key], abs=TIME_S), key
    for section, rates in (("pause", ("n", "tor")), ("backchannel", ("n",)), ("turn_taking", ("n", "tor")),
                           ("interruption", ("n", "stop_rate", "tor")), ("user_backchannel", ("n", "yield_rate"))):
        for key in rates:
            assert measured[section][key] == expected[section][key], (section, key)
    assert measured["backchannel"]["per_min"] == pytest.approx(expected["backchannel"]["per_min"], rel=1e-3)
    for section, key in (("turn_taking", "latency_s"), ("interruption", "latency_s"), ("interruption", "stop_latency_s")):
        for stat in ("mean", "p50", "p90"):
            assert measured[section][key][stat] == pytest.approx(expected[section][key][stat], abs=LATENCY_S), (section, key, stat)


def test_duplex_metrics_within_tolerance_of_truth(truth, run_result):
    _compare(run_result["duplex"], truth["summary"])


def test_face_metrics_match_truth(truth, run_result):
    face = run_result["face"]
    assert face["lip_sync_shown"]["lag_ms"] == pytest.approx(JAW_LAG_S * 1000, abs=LAG_MS)
    assert face["lip_sync_command"]["lag_ms"] == pytest.approx(-COMMAND_LEAD_S * 1000, abs=LAG_MS)
    assert face["lip_sync_shown"]["r"] > 0.9
    t = np.sort(truth["flame_t"])
    steps = np.diff(t)
    fl = face["flame"]
    assert fl["frames"] == t.shape[0] and fl["missing"] == 3
    assert fl["fps"] == pytest.approx(steps.size / (t[-1] - t[0]), rel=1e-6)
    assert fl["jitter_ms"] == pytest.approx(steps.std() * 1000, abs=0.01)  # stamps are stored to the ns
    assert fl["max_step_error_ms"] == pytest.approx(np.abs(steps - 0.04).max() * 1000, abs=0.01)
    assert face["frames_refused"] == REFUSED and face["refused_by_reason"] == {"refused_late": REFUSED}


def test_bag_gives_the_same_figures(truth, run_result):
    result = evaluate(load(truth["bag"]))
    _compare(result["duplex"], truth["summary"])
    assert result["face"]["lip_sync_shown"]["lag_ms"] == pytest.approx(JAW_LAG_S * 1000, abs=LAG_MS)
    assert result["face"]["flame"]["missing"] == 3


def test_reruns_give_identical_figures(truth, run_result):
    again = evaluate(load(truth["run"]))
    assert json.dumps(again, sort_keys=True) == json.dumps(run_result, sort_keys=True)


def test_cli_side_by_side_table_json_and_pictures(truth, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.main(["eval", str(truth["run"]), str(truth["bag"]), "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    header = stdout.splitlines()[0]
    assert "run" in header and "bag" in header
    assert any(line.startswith("turn-taking: n, TOR") and line.count("3, 1.000") == 2 for line in stdout.splitlines())
    data = json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in data["inputs"]] == ["run", "bag"]
    for name in ("run", "bag"):
        png = (out / f"timeline_{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_stereo_wav_input(truth, tmp_path):
    """conversation.wav (user left, robot right) is an input of its own."""
    import soundfile as sf

    u, _ = sf.read(truth["run"] / "user.wav", dtype="float32")
    r, _ = sf.read(truth["run"] / "robot.wav", dtype="float32")
    write_wav(tmp_path / "conversation.wav", np.stack([u, r], axis=1), RATE)
    result = evaluate(load(tmp_path / "conversation.wav"))
    _compare(result["duplex"], truth["summary"])


def _mutations():
    def drop(name):
        return lambda d: (d / name).unlink()

    def stereo_user(d):
        import soundfile as sf

        u, _ = sf.read(d / "user.wav", dtype="float32")
        write_wav(d / "user.wav", np.stack([u, u], axis=1), RATE)

    def old_summary(d):
        (d / "summary.json").write_text(json.dumps({"frames": 10}))

    return [
        (drop("flame.npz"), [], "missing flame.npz"),
        (drop("robot.wav"), [], "missing robot.wav"),
        (old_summary, [], "no t0_ns (written by an older facebot"),
        (stereo_user, [], "user.wav: 2 channel(s); user.wav must be mono"),
    ]


@pytest.mark.parametrize("mutate,extra,needle", _mutations())
def test_bad_run_folders_get_one_line(truth, tmp_path, capsys, mutate, extra, needle):
    run = tmp_path / "run"
    shutil.copytree(truth["run"], run)
    mutate(run)
    rc = cli.main(["eval", str(run), "--out", str(tmp_path / "o"), "--no-plot", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_bad_bags_and_wavs_get_one_line(truth, tmp_path, capsys):
    cases = [
        ([str(truth["bag"]), "--robot-topic", "/speaker"], "no topic /speaker"),
        ([str(truth["bag"]), "--robot-topic", "/face/flame"], "has type facebot/msg/FlameParams"),
        ([str(truth["run"] / "user.wav")], "a WAV input must be stereo (user left, robot right)"),
        ([str(tmp_path / "nothing")], "no such file or folder"),
        ([], "give run folders / bags / WAVs, or --scenarios"),
    ]
    stereo_bag = tmp_path / "stereo_bag"
    with BagRecorder(stereo_bag, {"/audio/in": "facebot/msg/AudioChunk", "/audio/out": "facebot/msg/AudioChunk"}) as bag:
        for k in range(5):
            stamp = T0 + k * 20_000_000
            bag.write("/audio/in", stamp, interfaces.audio_to_msg(np.zeros((480, 2), np.float32), 24000, stamp))
            bag.write("/audio/out", stamp, interfaces.audio_to_msg(np.zeros(480, np.float32), 24000, stamp))
    cases.append(([str(stereo_bag)], "/audio/in carries 2-channel audio; the user's side must be mono"))
    for args, needle in cases:
        rc = cli.main(["eval", *args, "--out", str(tmp_path / "o"), "--no-plot"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (args, err)


@pytest.mark.parametrize("situation", SITUATIONS)
def test_scenarios_have_known_speech_times_and_are_seeded(situation):
    audio, layout = make_scenario(situation, 1, seed=3)
    again, layout2 = make_scenario(situation, 1, seed=3)
    other, _ = make_scenario(situation, 1, seed=4)
    assert np.array_equal(audio, again) and layout == layout2
    assert not (audio.shape == other.shape and np.array_equal(audio, other))
    found = speech_segments(audio)
    truth = [Segment(u["start_s"], u["end_s"]) for u in layout["user"]]
    assert _close(found, truth, 2 * EDGE_S), (found, truth)
    if situation == "pause":
        gaps = [b.start_s - a.end_s for a, b in zip(truth, truth[1:])]
        assert len(gaps) == 2 and all(0.6 <= g <= 1.3 for g in gaps)


def test_a_facebot_run_folder_and_its_bag(sample_run):
    """The scripted backend on the sample: every reply, the backchannel and the barge-in are
    found where the layout put them, and the folder and its bag agree."""
    out, layout = sample_run
    folder, bag = evaluate(load(out)), evaluate(load(out / "bag"))
    turns = {t["purpose"]: t for t in layout["turns"]}
    d = folder["duplex"]
    assert (d["turn_taking"]["n"], d["turn_taking"]["tor"]) == (3, 1.0)
    assert (d["pause"]["n"], d["pause"]["tor"], d["backchannel"]["n"]) == (1, 0.0, 1)
    (barge,) = folder["events"]["interruptions"]
    assert barge["user_start_s"] == pytest.approx(turns["barge_in"]["start_s"], abs=EDGE_S)
    assert barge["stopped"] and 0.0 < barge["stop_latency_s"] < 0.3  # the loop stops within a frame or two
    assert folder["face"]["lip_sync_shown"]["lag_ms"] == pytest.approx(0.0, abs=LAG_MS)
    assert folder["face"]["flame"]["fps"] == pytest.approx(25.0) and folder["face"]["frames_refused"] == 0
    for section in ("pause", "turn_taking", "interruption"):
        assert bag["duplex"][section]["n"] == d[section]["n"]
    for key in ("mean", "p90"):
        assert bag["duplex"]["turn_taking"]["latency_s"][key] == pytest.approx(d["turn_taking"]["latency_s"][key], abs=0.02)
    assert bag["face"]["lip_sync_shown"]["lag_ms"] == folder["face"]["lip_sync_shown"]["lag_ms"]


def test_scenario_set_runs_the_backend_and_is_stable(tmp_path, capsys):
    """`facebot eval --scenarios`: the same figures on a rerun; the scripted backend's known
    behaviour (answers every turn, stops for every interruption, and for a user's "yeah" too)."""
    figures = []
    for name in ("a", "b"):
        rc = cli.main(["eval", "--scenarios", "--count", "1", "--no-plot", "--out", str(tmp_path / name)])
        assert rc == 0
        data = json.loads((tmp_path / name / "eval.json").read_text())
        figures.append(data["situations"])
    assert figures[0] == figures[1]
    s = figures[0]
    assert set(s) == set(SITUATIONS)
    assert s["turn_end"]["turn_taking"]["n"] == 2 and s["turn_end"]["turn_taking"]["tor"] == 1.0
    assert s["interrupt"]["interruption"]["n"] == 1 and s["interrupt"]["interruption"]["stop_rate"] == 1.0
    assert s["user_backchannel"]["user_backchannel"]["n"] == 1
    assert s["user_backchannel"]["user_backchannel"]["yield_rate"] == 1.0
    assert s["pause"]["pause"]["n"] == 2
    table = capsys.readouterr().out
    assert "Moshi" in table and "PersonaPlex" in table and "pause handling TOR" in table
    for situation in SITUATIONS:
        assert (tmp_path / "a" / f"{situation}_0" / "scenario.json").is_file()
