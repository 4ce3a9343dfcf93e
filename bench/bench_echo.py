"""Echo cancellation on a simulated open loudspeaker: with and without AEC, side by side.

For each seed (a different room, head layout, hardware delay and interruption time) the same
conversation (``facebot.pipeline.echo_side.echo_scenario``: a question, the robot's long reply
heard out, a second question, an interruption 1.5-3.5 s into the second reply) runs through
the closed loop four ways: no loudspeaker at all (headphones: the baseline for barge-in
timing), an open loudspeaker without echo cancellation, with it (AEC3 + noise suppression +
high-pass, the default), and with it but without noise suppression. Prints per seed and
summed: ERLE after convergence, convergence time, estimated vs true delay, false barge-ins
(count and per minute of robot speech) and the echo leak (the VAD's highest probability on
robot-only audio the canceller was cleaning: the margin below ``vad_echo_threshold``),
barge-in latency during double talk (from the interruption's speech onset to the VAD's
decision on the input timeline; its distribution over the rooms), how many of the
interruption's words are recognised (pocketsphinx) on the channel the loop heard, next to
how many it finds in the user's voice through the same room without the robot's echo (so
words lost to reverberation are not blamed on the canceller), and the canceller's CPU time
per 10 ms.

    python bench/bench_echo.py                       # rooms 0-9
    python bench/bench_echo.py --seeds 0-19 --variants aec --echo-db 6
    python bench/bench_echo.py --seeds 0,1,2 --room-delay-ms 700 --variants aec,aec-untracked --no-asr
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facebot.audio.espeak import in_fresh_interpreter  # noqa: E402
from facebot.audio.framing import MODEL_RATE  # noqa: E402
from facebot.audio.room import EchoRoom, EchoRoomConfig  # noqa: E402
from facebot.pipeline.duplex import DuplexLoop  # noqa: E402
from facebot.config.loop import LoopConfig  # noqa: E402
from facebot.pipeline.echo_side import (ROBOT_LONG_REPLY, USER_INTERRUPTION, EchoSide,  # noqa: E402
                                        EchoTrace, echo_scenario, run_frames)
from facebot.pipeline.echo_stage import EchoInputStage  # noqa: E402
from facebot.config.echo import EchoStageConfig  # noqa: E402
from facebot.pipeline.scripted import ScriptedBackend  # noqa: E402
from facebot.config.scripted import ScriptedConfig  # noqa: E402

LATENCY_TARGET_MS = 150.0
VARIANTS = ("headphones", "no-aec", "aec", "aec-no-ns", "aec-untracked")
DEFAULT_VARIANTS = "headphones,no-aec,aec,aec-no-ns"


def _words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


def run_one(backend, scenario, seed: int, variant: str, room_delay_ms, echo_db: float, transcribe=None,
            distortion: float | None = None, loop_config: LoopConfig | None = None) -> dict:
    room = stage = None
    if variant != "headphones":
        extra = {} if distortion is None else {"distortion": distortion}
        room = EchoRoom(EchoRoomConfig(seed=seed, delay_ms=room_delay_ms, echo_gain_db=echo_db, **extra))
        aec = variant.startswith("aec")
        stage = EchoInputStage(EchoStageConfig(
            echo_cancellation=aec, noise_suppression=variant != "aec-no-ns" and aec, high_pass_filter=aec,
            track_delay=variant != "aec-untracked"))
    side = EchoSide(stage, room, EchoTrace() if room is not None else None)
    loop = DuplexLoop(backend, loop_config or LoopConfig(playout_delay_ms=80.0), seed=seed)
    t0 = time.perf_counter()
    results = run_frames(loop, scenario.user, side)
    wall = time.perf_counter() - t0
    row = {"seed": seed, "variant": variant, "wall_s": round(wall, 1)}
    a, b = scenario.interruption_s
    if room is not None:
        from facebot.pipeline.echo_metrics import echo_metrics

        m = echo_metrics(side.trace)
        keys = ("erle_db", "erle_p10_db", "converged_s", "false_barge_ins", "false_barge_ins_per_min",
                "robot_speech_s", "echo_leak_prob")
        row.update({k: m.get(k) for k in keys})
        row["true_delay_ms"] = round(room.echo_delay_ms, 1)
        row["estimated_delay_ms"] = round(stage.delay_ms, 1) if aec else None
        row["cpu_ms_per_10ms"] = round(stage.canceller.cpu_ms_per_block, 3)
        row["stage_ms_per_frame_p50"] = round(float(np.median(side.stage_ms)), 3)
        heard = np.concatenate([r.user_audio for r in results])
    else:
        heard = scenario.user
    # barge-in on the interruption: the VAD's decision time after the interruption starts
    onsets = [r.user.onset_sample / MODEL_RATE for r in results
              if r.output.barge_in and r.user.onset_sample is not None]
    hit = [t for t in onsets if a - 0.05 <= t <= a + 1.0]
    row["interruption_latency_ms"] = round((hit[0] - scenario.speech_onset_s) * 1000.0, 1) if hit else None
    if transcribe is not None:
        seg = heard[int((a - 0.2) * MODEL_RATE):int((b + 0.5) * MODEL_RATE)]
        got = _words(transcribe(seg, MODEL_RATE))
        want = _words(USER_INTERRUPTION)
        row["interruption_words"] = f"{len(got & want)}/{len(want)}"
        if room is not None:  # the same stretch of the user's voice through the room, no echo
            alone = np.concatenate(side.trace.user)[int((a - 0.2) * MODEL_RATE):int((b + 0.5) * MODEL_RATE)]
            row["room_words"] = f"{len(_words(transcribe(alone, MODEL_RATE)) & want)}/{len(want)}"
    return row


def _seeds(text: str) -> list[int]:
    if "-" in text.strip("-"):
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",") if x]


def _latencies(lat: list) -> str:
    """The double-talk barge-in latencies over the rooms: sorted, with median, 90th
    percentile and how many are within the target (a miss counts against it)."""
    if not lat:
        return "-"
    ok = sorted(x for x in lat if x is not None)
    text = f"{ok} missed {len(lat) - len(ok)}"
    if ok:
        within = sum(x <= LATENCY_TARGET_MS for x in ok)
        text += (f"; p50 {np.median(ok):.0f}, p90 {np.percentile(ok, 90):.0f}, "
                 f"<= {LATENCY_TARGET_MS:.0f} ms: {within}/{len(lat)}")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-9", help="rooms: a list (0,3,7) or a range (0-9)")
    p.add_argument("--room-delay-ms", type=float, default=None, help="fix the hardware delay (default: seeded)")
    p.add_argument("--echo-db", type=float, default=0.0, help="loudspeaker level at the mic (dB)")
    p.add_argument("--distortion", type=float, default=None, help="loudspeaker soft clipping 0-1 (room default)")
    p.add_argument("--vad-echo-threshold", type=float, default=LoopConfig().vad_echo_threshold,
                   help="VAD probability that starts a barge-in over the robot's echo (the loop's setting)")
    p.add_argument("--no-asr", action="store_true", help="skip the recogniser (needs pocketsphinx)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated, of {', '.join(VARIANTS)} (aec-untracked: AEC3 with the reference "
                        "at its stamps, no delay tracking)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        p.error(f"unknown variant(s): {', '.join(sorted(set(variants) - set(VARIANTS)))}")
    transcribe = None
    if not args.no_asr:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
        from asr import transcribe  # the tests' pocketsphinx wrapper
    loop_config = LoopConfig(playout_delay_ms=80.0, vad_echo_threshold=args.vad_echo_threshold)  # checks it
    # every voice is synthesised in a fresh interpreter, as in the tests (test_echo_loop.py)
    backend = in_fresh_interpreter(ScriptedBackend, ScriptedConfig(replies=(ROBOT_LONG_REPLY,)))
    rows = []
    for seed in _seeds(args.seeds):
        scenario = in_fresh_interpreter(echo_scenario, seed)
        for variant in variants:
            row = run_one(backend, scenario, seed, variant, args.room_delay_ms, args.echo_db, transcribe,
                          args.distortion, loop_config)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    cols = ("variant", "ERLE dB (p10)", "conv s", "false b-i (/min)", "echo leak", "b-i latency ms", "words (room)",
            "delay est/true", "AEC ms/10ms", "stage ms/80ms p50")
    print(" | ".join(cols))
    for variant in variants:
        rs = [r for r in rows if r["variant"] == variant]
        lat = [r["interruption_latency_ms"] for r in rs]
        erle = [r.get("erle_db") for r in rs if r.get("erle_db") is not None]
        p10 = [r.get("erle_p10_db") for r in rs if r.get("erle_p10_db") is not None]
        conv = [r.get("converged_s") for r in rs if r.get("converged_s") is not None]
        false = sum(r.get("false_barge_ins") or 0 for r in rs)
        speech = sum(r.get("robot_speech_s") or 0 for r in rs)
        words = ", ".join(r.get("interruption_words", "-") + (f" ({r['room_words']})" if "room_words" in r else "")
                          for r in rs)
        leak = [r.get("echo_leak_prob") for r in rs if r.get("echo_leak_prob") is not None]
        delays = (", ".join(f"{r.get('estimated_delay_ms')}/{r.get('true_delay_ms')}" for r in rs)
                  if variant.startswith("aec") else "-")
        cpu = [r.get("cpu_ms_per_10ms") for r in rs if r.get("cpu_ms_per_10ms")]
        stage_ms = [r.get("stage_ms_per_frame_p50") for r in rs if r.get("stage_ms_per_frame_p50")]
        print(" | ".join([
            variant,
            f"{min(erle):.1f}-{max(erle):.1f} ({min(p10):.1f})" if erle else "-",
            f"<= {max(conv):.2f}" if conv else "-",
            f"{false} ({60 * false / speech:.1f})" if speech else "-",
            f"<= {max(leak):.2f}" if leak else "-",
            _latencies(lat),
            words, delays,
            f"{np.median(cpu):.3f}" if cpu else "-",
            f"{np.median(stage_ms):.2f}" if stage_ms else "-",
        ]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
