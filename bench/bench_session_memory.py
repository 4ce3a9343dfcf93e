"""Peak memory of `facebot run` against session length: a long session must not need more.

Generates a short and a long input (a few espeak sentences, a tone and some noise, with
pauses for the robot to answer in, repeated to length) and runs
`facebot run --backend scripted --no-video --no-progress --input <wav>` on each as a fresh
process, taking its peak RSS from the kernel (``os.wait4``'s ``ru_maxrss``). The target is
the long session's peak within 150 MB of the short one's: inputs and outputs are streamed
from and to disk, so nothing held grows with the session.

    python bench/bench_session_memory.py --long-minutes 120
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 24000
TARGET_MB = 150.0
SENTENCES = ("Hello robot, how are you doing today?",
             "Tell me something about the weather, please.",
             "That is interesting, I did not know that at all.")


def conversation_cycle(seed: int = 0) -> np.ndarray:
    """One cycle of the user's side: sentences, a tone, noise, and pauses for the replies."""
    from facebot.audio.espeak import EspeakVoice

    rng = np.random.default_rng(seed)
    voice = EspeakVoice(voice="en-us+f2", rate_wpm=140)
    parts = []
    for text in SENTENCES:
        parts.append(voice.synthesize(text, sample_rate=RATE).audio.astype(np.float32))
        parts.append(np.zeros(int(4.0 * RATE), np.float32))  # the robot answers here
    t = np.arange(int(0.8 * RATE)) / RATE
    parts.append((0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32))
    parts.append(np.zeros(int(1.0 * RATE), np.float32))
    parts.append((0.05 * rng.standard_normal(int(1.5 * RATE))).astype(np.float32))
    parts.append(np.zeros(int(2.0 * RATE), np.float32))
    return np.concatenate(parts)


def write_input(path: Path, minutes: float, cycle: np.ndarray) -> None:
    """Writes ``minutes`` of repeated cycles block by block (the long one is ~350 MB as float)."""
    import soundfile as sf

    total = int(minutes * 60 * RATE)
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            block = cycle[: total - written]
            f.write(block)
            written += block.shape[0]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def run_once(wav: Path, out: Path) -> dict:
    """One `facebot run` as a child process: its peak RSS (MB), wall time and the RSS sampled
    each second (to tell growth during the session from a peak while writing outputs)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "facebot.cli", "run", "--backend", "scripted", "--no-video", "--no-progress",
           "--input", str(wav), "--out", str(out)]
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        samples = []
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append(rss)
            time.sleep(1.0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = out.with_suffix(".log").read_text().strip().splitlines()[-3:]
        raise SystemExit(f"facebot run failed (exit {proc.returncode}): {' | '.join(tail)}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024.0, "wall_s": time.perf_counter() - t0, "rss_mb": samples}


def _quartiles(samples: list[float]) -> str:
    if not samples:
        return ""
    picks = [samples[min(len(samples) - 1, int(q * (len(samples) - 1)))] for q in (0.1, 0.25, 0.5, 0.75, 0.95)]
    return "RSS at 10/25/50/75/95% of the run: " + " ".join(f"{v:.0f}" for v in picks) + " MB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-minutes", type=float, default=2.0)
    ap.add_argument("--long-minutes", type=float, default=120.0)
    ap.add_argument("--keep", type=Path, default=None, help="write inputs and outputs here instead of a temp dir")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cycle = conversation_cycle()
        results = {}
        for name, minutes in (("short", args.short_minutes), ("long", args.long_minutes)):
            wav = work / f"{name}.wav"
            write_input(wav, minutes, cycle)
            results[name] = run_once(wav, work / f"{name}_out")
            print(f"{name:5s} {minutes:7.1f} min: peak RSS {results[name]['peak_rss_mb']:8.1f} MB "
                  f"({results[name]['wall_s']:.0f} s); {_quartiles(results[name]['rss_mb'])}", flush=True)
    diff = results["long"]["peak_rss_mb"] - results["short"]["peak_rss_mb"]
    verdict = "within" if diff <= TARGET_MB else "OVER"
    print(f"difference {diff:+.1f} MB ({verdict} the {TARGET_MB:.0f} MB target)")
    return 0 if diff <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
