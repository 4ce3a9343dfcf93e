"""The closed loop with an open loudspeaker (simulated room): the robot does not barge in on
itself with echo cancellation, and still hears the user who interrupts it."""
import sys
from pathlib import Path

import numpy as np
import pytest

from facebot.audio.espeak import in_fresh_interpreter
from facebot.audio.framing import MODEL_RATE
from facebot.audio.room import EchoRoom, EchoRoomConfig
from facebot.pipeline.duplex import DuplexLoop
from facebot.config.loop import LoopConfig
from facebot.pipeline.echo_metrics import echo_metrics
from facebot.pipeline.echo_side import ROBOT_LONG_REPLY, EchoSide, EchoTrace, echo_scenario, run_frames
from facebot.pipeline.echo_stage import EchoInputStage
from facebot.config.echo import EchoStageConfig
from facebot.pipeline.scripted import ScriptedBackend
from facebot.config.scripted import ScriptedConfig

sys.path.insert(0, str(Path(__file__).parent))
from asr import transcribe  # noqa: E402

SEED = 0


def _backend():
    return ScriptedBackend(ScriptedConfig(replies=(ROBOT_LONG_REPLY,)))


@pytest.fixture(scope="module")
def backend():
    return in_fresh_interpreter(_backend)


def fresh_scenario(seed: int):
    return in_fresh_interpreter(echo_scenario, seed)


_SCENARIOS: dict = {}


def session(backend, aec: bool, seed: int = SEED, loudspeaker: bool = True):
    if seed not in _SCENARIOS:
        _SCENARIOS[seed] = fresh_scenario(seed)
    scenario = _SCENARIOS[seed]
    room = EchoRoom(EchoRoomConfig(seed=seed)) if loudspeaker else None
    stage = EchoInputStage(EchoStageConfig(echo_cancellation=aec, noise_suppression=aec, high_pass_filter=aec))
    side = EchoSide(stage if loudspeaker else None, room, EchoTrace() if loudspeaker else None)
    results = run_frames(DuplexLoop(backend, LoopConfig(playout_delay_ms=80.0), seed=seed), scenario.user, side)
    return scenario, room, stage, results, (echo_metrics(side.trace) if loudspeaker else {})


def interruption_latency_s(scenario, results):
    a = scenario.interruption_s[0]
    barge = [r.user.onset_sample / MODEL_RATE for r in results if r.output.barge_in]
    hits = [t for t in barge if a - 0.05 <= t <= a + 1.0]
    return hits[0] - scenario.speech_onset_s if hits else None


@pytest.fixture(scope="module")
def with_aec(backend):
    return session(backend, aec=True)


def test_without_aec_the_robot_barges_in_on_itself(backend):
    _, _, _, _, m = session(backend, aec=False)
    print(m)
    assert m["false_barge_ins"] >= 3


def test_with_aec_no_false_barge_in_and_erle_after_convergence(with_aec):
    scenario, room, stage, results, m = with_aec
    print(m, stage.stats())
    assert m["robot_only_s"] > 5.0  # the first reply was heard out
    assert m["erle_db"] >= 25.0 and m["converged_s"] <= 1.0
    assert m["false_barge_ins"] == 0
    # what AEC3 lets through of the robot stays well below the VAD's echo threshold
    assert m["echo_leak_prob"] is not None and m["echo_leak_prob"] < LoopConfig().vad_echo_threshold / 2
    assert abs(stage.delay_ms - room.echo_delay_ms) < 2.0


def test_interruption_detected_and_its_words_survive(backend, with_aec):
    scenario, _, _, results, _ = with_aec
    latency = interruption_latency_s(scenario, results)
    assert latency is not None, "the interruption was not detected"
    baseline = interruption_latency_s(*[session(backend, aec=False, loudspeaker=False)[i] for i in (0, 3)])
    print(f"barge-in during double talk: {latency * 1000:.0f} ms after the speech onset "
          f"(headphones: {baseline * 1000:.0f} ms)")
    assert latency <= 0.2  # bench_echo.py gives the distribution over seeds
    a, b = scenario.interruption_s
    span = slice(int((a - 0.2) * MODEL_RATE), int((b + 0.5) * MODEL_RATE))
    heard = np.concatenate([r.user_audio for r in results])
    dry = transcribe(scenario.user[span], MODEL_RATE).split()
    cleaned = set(transcribe(heard[span], MODEL_RATE).split())
    print("dry:", dry, "cleaned:", cleaned)
    assert len(dry) >= 8  # the recogniser understands this voice when nothing is in the way
    assert len(set(dry) & cleaned) >= len(set(dry)) // 2


@pytest.mark.parametrize("seed", range(5))
def test_double_talk_barge_in_within_150_ms(backend, with_aec, seed):
    """In every seeded room (bench_echo.py gives the distribution over ten rooms, with its
    voices synthesised in one process, where espeak's audio differs slightly)."""
    scenario, _, _, results, m = with_aec if seed == SEED else session(backend, aec=True, seed=seed)
    latency = interruption_latency_s(scenario, results)
    print(f"seed {seed}: barge-in {latency} s after the onset; false barge-ins {m['false_barge_ins']}")
    assert m["false_barge_ins"] == 0
    assert latency is not None and latency <= 0.150


def test_facebot_run_echo_room_reports_what_the_canceller_achieved(tmp_path):
    import json

    import soundfile as sf

    from facebot import cli

    wav = tmp_path / "user.wav"
    sf.write(wav, (_SCENARIOS.get(SEED) or fresh_scenario(SEED)).user, MODEL_RATE)
    out = tmp_path / "out"
    assert cli.main(["run", "--input", str(wav), "--echo-room", "--seed", str(SEED), "--out", str(out),
                     "--no-video", "--head", "none", "--no-progress", "--t0-ns", "1700000000000000000"]) == 0
    echo = json.loads((out / "summary.json").read_text())["echo"]
    print(echo)
    assert echo["echo_cancellation"] and echo["reference"] == "ok"
    assert abs(echo["estimated_delay_ms"] - echo["true_delay_ms"]) < 2.0
    assert echo["achieved"]["erle_db"] >= 25.0 and echo["achieved"]["false_barge_ins"] == 0
    assert (out / "mic.wav").is_file()
    mic, _ = sf.read(out / "mic.wav")
    heard, _ = sf.read(out / "user.wav")
    n = min(mic.shape[0], heard.shape[0])
    assert n > 10 * MODEL_RATE and np.abs(mic[:n] - heard[:n]).max() > 0.05  # the echo was in, and taken out
    bad = cli.main(["run", "--input", str(wav), "--echo-room", "--room-delay-ms", "5000", "--out",
                    str(tmp_path / "bad"), "--no-video", "--no-progress"])
    assert bad == 2 and not (tmp_path / "bad").exists()
