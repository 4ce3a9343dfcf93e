"""The benchmark's four situations, made with espeak-ng, run through the session code of
`facebot run`, and scored.

Each situation is a user's side of a short exchange (the user is recorded, not reactive,
as in Full-Duplex-Bench): ``pause`` (a long turn with two mid-turn pauses), ``user_backchannel``
(a question, then a short "yeah" while the robot answers), ``turn_end`` (two questions, each
followed by room for the answer) and ``interrupt`` (a question, then a longer utterance over
the answer). Texts, pause lengths and timings are drawn from a seeded generator. The user's
speech times are known exactly (the clips are placed at known samples) and are written next to
each input as ``scenario.json``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facebot.audio.espeak import EspeakVoice
from facebot.audio.files import write_wav
from facebot.eval.inputs import RATE

SITUATIONS = ("pause", "user_backchannel", "turn_end", "interrupt")
USER_VOICE = dict(voice="en-us+m3", rate_wpm=155, pitch=60)  # the sample conversation's user
T0_NS = 1_700_000_000_000_000_000  # fixed capture time: reruns give identical runs

LONG_TURNS = (
    ("Yesterday I went to the market in the old town", "and I bought some fresh bread",
     "and a big piece of cheese for dinner."),
    ("When I was a child I always wanted to become an astronaut", "and fly all the way to the moon",
     "but now I work with computers instead."),
    ("The best way to learn a new language quickly", "is to speak it every single day",
     "even when you make a lot of mistakes."),
    ("My favourite thing about the summer holidays", "is the long warm evenings",
     "that we spend outside with the whole family."),
    ("Last weekend my sister and I drove to the mountains", "to walk along the river",
     "and we saw two deer in the forest."),
)
QUESTIONS = (
    "Hello robot, how are you doing today?",
    "Can you tell me something about yourself?",
    "What do you like to do in your free time?",
    "Do you know any good books that I should read?",
    "Could you explain to me how you work?",
    "What is your favourite kind of music?",
)
USER_BACKCHANNELS = ("yeah", "okay", "right", "uh huh")
INTERRUPTIONS = (
    "Wait, stop, I have a different question for you.",
    "Sorry to interrupt, but can we talk about something else?",
    "Hold on a second, let me say something please.",
    "Excuse me, I need to ask you something important.",
)


@dataclass
class Utterance:
    text: str
    start_s: float  # first non-silent sample
    end_s: float  # last non-silent sample
    role: str  # "turn", "pause_part", "backchannel", "interruption"


def _trimmed(audio: np.ndarray, level: float = 1e-3) -> np.ndarray:
    idx = np.nonzero(np.abs(audio) > level)[0]
    return audio[idx[0]: idx[-1] + 1] if idx.size else audio


class ClipTrack:
    """One channel laid out from espeak clips placed at known samples: its speech times are
    exact (each clip trimmed to its first and last audible sample)."""

    def __init__(self, **voice) -> None:
        self.voice = EspeakVoice(**(voice or USER_VOICE))
        self.pieces: list[tuple[int, np.ndarray]] = []
        self.utterances: list[Utterance] = []

    def say(self, text: str, start_s: float, role: str = "", cut_s: float | None = None) -> float:
        """Places ``text`` from ``start_s`` (cut off after ``cut_s`` seconds if given); returns its end."""
        audio = _trimmed(self.voice.synthesize(text, sample_rate=RATE).audio)
        if cut_s is not None:
            audio = _trimmed(audio[: int(round(cut_s * RATE))])
        start = int(round(start_s * RATE))
        self.pieces.append((start, audio))
        end_s = (start + audio.shape[0]) / RATE
        self.utterances.append(Utterance(text, start / RATE, end_s, role))
        return end_s

    def audio(self, duration_s: float) -> np.ndarray:
        out = np.zeros(int(round(duration_s * RATE)), np.float32)
        for start, a in self.pieces:
            out[start:start + a.shape[0]] += a[: max(0, out.shape[0] - start)]
        return out


def make_scenario(situation: str, index: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The user's audio of one instance and its layout (exact speech times)."""
    if situation not in SITUATIONS:
        raise ValueError(f"unknown situation {situation!r} (known: {', '.join(SITUATIONS)})")
    rng = np.random.default_rng([seed, SITUATIONS.index(situation), index])
    track = ClipTrack()
    t = 0.5
    if situation == "pause":
        parts = LONG_TURNS[rng.integers(len(LONG_TURNS))]
        pauses = [float(rng.uniform(0.6, 1.3)) for _ in parts[1:]]
        t = track.say(parts[0], t, "pause_part")
        for text, pause in zip(parts[1:], pauses):
            t = track.say(text, t + pause, "pause_part")
        end = t + 6.0
    elif situation == "turn_end":
        first, second = rng.choice(len(QUESTIONS), 2, replace=False)
        t = track.say(QUESTIONS[first], t, "turn")
        t = track.say(QUESTIONS[second], t + 8.0, "turn")
        end = t + 7.0
    else:
        t = track.say(QUESTIONS[rng.integers(len(QUESTIONS))], t, "turn")
        # The answer starts about a second after the question; land inside it.
        at = t + float(rng.uniform(2.2, 3.0))
        if situation == "user_backchannel":
            t = track.say(USER_BACKCHANNELS[rng.integers(len(USER_BACKCHANNELS))], at, "backchannel")
        else:
            t = track.say(INTERRUPTIONS[rng.integers(len(INTERRUPTIONS))], at, "interruption")
        end = t + 7.0
    layout = {"situation": situation, "index": index, "seed": seed, "sample_rate": RATE,
              "duration_s": end, "user": [asdict(u) for u in track.utterances]}
    return track.audio(end), layout


# The event lists each situation is scored on (pooled over its instances).
_SCORE_KEYS = {
    "pause": ("pauses", "robot_backchannels"),
    "user_backchannel": ("user_backchannels",),
    "turn_end": ("turn_ends",),
    "interrupt": ("interruptions",),
}


def run_scenarios(out_dir: str | Path, build: Callable, count: int = 5, seed: int = 0,
                  evaluate: Callable | None = None, plot: bool = True, log: Callable = print) -> dict:
    """Makes ``count`` instances of each situation, runs them, scores them.

    ``build()`` returns ``(loop, head)`` as `facebot run` builds them; the session itself is
    `facebot run`'s ``run_session``. Returns the aggregate (also written to eval.json).
    """
    from facebot.eval.evaluate import evaluate as evaluate_conversation
    from facebot.eval.inputs import load
    from facebot.pipeline.session import run_session
    from facebot.pipeline.sources import FileAudioSource

    evaluate = evaluate or evaluate_conversation
    out = Path(out_dir)
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    runs, backend = [], None
    for situation in SITUATIONS:
        for k in range(count):
            audio, layout = make_scenario(situation, k, seed)
            name = f"{situation}_{k}"
            wav = out / "inputs" / f"{name}.wav"
            write_wav(wav, audio, RATE)
            (out / "inputs" / f"{name}.json").write_text(json.dumps(layout, indent=1))
            loop, head = build()
            loop.reset(seed)
            backend = loop.backend.describe()
            run_dir = out / name
            run_session(loop, run_dir, FileAudioSource(wav, T0_NS), head=head, progress=False, deterministic=True,
                        plot=plot)
            (run_dir / "scenario.json").write_text(json.dumps(layout, indent=1))
            conv = load(run_dir)
            result = evaluate(conv)
            result["situation"] = situation
            (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
            if plot:
                from facebot.eval.plot import plot_timeline

                plot_timeline(run_dir / "timeline.png", conv, result)
            runs.append(result)
            log(f"  {name}: {_one_line(result)}")
    summary = {"backend": backend, "count": count, "seed": seed, "situations": aggregate(runs)}
    (out / "eval.json").write_text(json.dumps({**summary, "runs": [
        {k: r[k] for k in ("name", "situation", "duplex", "face")} for r in runs]}, indent=1))
    return summary


def _one_line(result: dict) -> str:
    ev = result["events"]
    return (f"pauses taken {sum(p['taken'] for p in ev['pauses'])}/{len(ev['pauses'])}, "
            f"replies {sum(e['taken'] for e in ev['turn_ends'])}/{len(ev['turn_ends'])}, "
            f"interruptions stopped {sum(e['stopped'] for e in ev['interruptions'])}/{len(ev['interruptions'])}, "
            f"user backchannels yielded {sum(e['stopped'] for e in ev['user_backchannels'])}/{len(ev['user_backchannels'])}, "
            f"robot backchannels {len(ev['robot_backchannels'])}")


def aggregate(runs: list[dict]) -> dict:
    """Each situation's figures over its instances: the events of all runs pooled, then the
    same summary as for one conversation (so the definitions are the same)."""
    from facebot.eval.turns import Events, summarize

    out = {}
    for situation in SITUATIONS:
        mine = [r for r in runs if r.get("situation") == situation]
        if not mine:
            continue
        pooled = Events()
        for r in mine:
            for key in _SCORE_KEYS[situation]:
                getattr(pooled, key).extend(r["events"][key])
        duration = sum(r["duplex"]["duration_s"] for r in mine)
        s = summarize(pooled, [], [], duration)
        out[situation] = {"instances": len(mine), **{k: s[k] for k in _SECTIONS[situation]}}
    return out


_SECTIONS = {
    "pause": ("pause", "backchannel"),
    "user_backchannel": ("user_backchannel",),
    "turn_end": ("turn_taking",),
    "interrupt": ("interruption",),
}

# Full-Duplex-Bench v1 (README of github.com/DanielLin94144/Full-Duplex-Bench, v1_v1.5):
# Moshi and PersonaPlex. Interruption latency there is the response latency (end of the
# user's interruption to the model's first word); backchannel frequency is per second.
PUBLISHED = {
    "Moshi": {"pause_tor": 0.985, "backchannel_per_s": 0.001, "turn_taking_tor": 0.941,
              "turn_taking_latency_s": 0.265, "interruption_tor": 1.0, "interruption_latency_s": 0.257},
    "PersonaPlex": {"pause_tor": 0.584, "backchannel_per_s": 0.025, "turn_taking_tor": 0.992,
                    "turn_taking_latency_s": 0.070, "interruption_tor": 1.0, "interruption_latency_s": 0.400},
}


def headline(situations: dict) -> dict:
    """Our figures in the published table's terms (means, as Full-Duplex-Bench reports)."""
    g = lambda *keys: _get(situations, keys)  # noqa: E731
    return {
        "pause_tor": g("pause", "pause", "tor"),
        "backchannel_per_s": g("pause", "backchannel", "per_s"),
        "turn_taking_tor": g("turn_end", "turn_taking", "tor"),
        "turn_taking_latency_s": g("turn_end", "turn_taking", "latency_s", "mean"),
        "turn_taking_latency_p50_s": g("turn_end", "turn_taking", "latency_s", "p50"),
        "turn_taking_latency_p90_s": g("turn_end", "turn_taking", "latency_s", "p90"),
        "interruption_tor": g("interrupt", "interruption", "tor"),
        "interruption_latency_s": g("interrupt", "interruption", "latency_s", "mean"),
        "interruption_stop_rate": g("interrupt", "interruption", "stop_rate"),
        "interruption_stop_latency_s": g("interrupt", "interruption", "stop_latency_s", "mean"),
        "interruption_stop_latency_p90_s": g("interrupt", "interruption", "stop_latency_s", "p90"),
        "user_backchannel_yield_rate": g("user_backchannel", "user_backchannel", "yield_rate"),
    }


def _get(d, keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def format_comparison(ours_label: str, situations: dict) -> str:
    """Our headline figures beside the published ones, one row per figure."""
    ours = headline(situations)
    cols = [(ours_label, ours)] + list(PUBLISHED.items())
    labels = {
        "pause_tor": "pause handling TOR (lower better)",
        "backchannel_per_s": "backchannel freq (/s, higher better)",
        "turn_taking_tor": "turn-taking TOR (higher better)",
        "turn_taking_latency_s": "turn-taking latency (s, mean)",
        "turn_taking_latency_p50_s": "  p50",
        "turn_taking_latency_p90_s": "  p90",
        "interruption_tor": "interruption TOR (higher better)",
        "interruption_latency_s": "interruption response latency (s)",
        "interruption_stop_rate": "interruption stop rate",
        "interruption_stop_latency_s": "interruption stop latency (s, mean)",
        "interruption_stop_latency_p90_s": "  p90",
        "user_backchannel_yield_rate": "yields to a user backchannel (lower better)",
    }
    width = max(len(v) for v in labels.values()) + 2
    widths = [max(len(name), 8) + 2 for name, _ in cols]
    lines = [" " * width + "".join(name.rjust(w) for (name, _), w in zip(cols, widths))]
    for key, label in labels.items():
        cells = []
        for (_, figures), w in zip(cols, widths):
            v = figures.get(key)
            cells.append(("-" if v is None else f"{v:.3f}").rjust(w))
        lines.append(label.ljust(width) + "".join(cells))
    counts = {"pause": ("pause", "pauses"), "user_backchannel": ("user_backchannel", "user backchannels over the robot"),
              "turn_end": ("turn_taking", "turn ends"), "interrupt": ("interruption", "interruptions of a robot turn")}
    found = [f"{situations[k][sec]['n']} {what} in {situations[k]['instances']} {k} runs"
             for k, (sec, what) in counts.items() if k in situations]
    lines.append(f"{ours_label} events found: " + "; ".join(found))
    return "\n".join(lines)
