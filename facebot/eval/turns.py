"""Duplex behaviour metrics from the two channels' speech segments (Full-Duplex-Bench style).

Full-Duplex-Bench (v1, Lin et al. 2025) judges a model's output with a time-aligned transcript:
the model "takes the turn" when its speech spans at least 1 s (or more than three words), a
backchannel is a short output of at most two words under 1 s, and latencies run from the
user's end of speech to the model's first word, negative values counted as 0. We have no
recogniser in the loop, so speech extent comes from silero-vad and the word counts are left
out: a robot *turn* is a run of robot speech lasting ``turn_min_s`` (1 s), anything shorter
is a *short* run. The benchmark's datasets say which situation each recording is; on an
arbitrary conversation the situations are read from the user's channel (``EventRules``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facebot.eval.segments import Segment, active_at, merge, overlap_s


@dataclass(frozen=True)
class EventRules:
    """How situations are told apart on the timeline (all in seconds)."""

    turn_min_s: float = 1.0  # robot speech this long takes the turn (Full-Duplex-Bench: 1 s)
    robot_merge_s: float = 0.5  # robot segments closer than this are one run
    pause_min_s: float = 0.5  # a gap in the user's speech this long is a pause ...
    pause_max_s: float = 1.5  # ... if the user speaks again within this; longer ends the turn
    early_s: float = 0.5  # a reply may start this much before the user's end and still count

    def __post_init__(self) -> None:
        if not 0 < self.pause_min_s < self.pause_max_s:
            raise ValueError(f"need 0 < pause_min_s ({self.pause_min_s}) < pause_max_s ({self.pause_max_s})")
        if self.turn_min_s <= 0 or self.robot_merge_s < 0 or self.early_s < 0:
            raise ValueError("turn_min_s must be > 0, robot_merge_s and early_s >= 0")


@dataclass
class UserTurn:
    start_s: float
    end_s: float
    segments: list[Segment]
    kind: str  # "turn", "interruption" (over a robot turn), "backchannel" (short, over a robot turn)

    @property
    def pauses(self) -> list[tuple[float, float]]:
        return [(a.end_s, b.start_s) for a, b in zip(self.segments, self.segments[1:])]


@dataclass
class Events:
    """Every situation found, with what the robot did; the summary is computed from these."""

    pauses: list[dict] = field(default_factory=list)
    turn_ends: list[dict] = field(default_factory=list)
    interruptions: list[dict] = field(default_factory=list)
    user_backchannels: list[dict] = field(default_factory=list)
    robot_backchannels: list[dict] = field(default_factory=list)


def user_turns(user: list[Segment], robot_runs: list[Segment], rules: EventRules) -> list[UserTurn]:
    """Groups the user's segments into turns and says which ones start over a robot turn."""
    groups: list[list[Segment]] = []
    for s in user:
        if groups and s.start_s - groups[-1][-1].end_s < rules.pause_max_s:
            groups[-1].append(s)
        else:
            groups.append([s])
    turns = []
    for g in groups:
        start, end = g[0].start_s, g[-1].end_s
        over = active_at(robot_runs, start)
        kind = "turn"
        if over is not None and over.duration_s >= rules.turn_min_s and over.start_s < start:
            kind = "interruption" if end - start >= rules.turn_min_s else "backchannel"
        turns.append(UserTurn(start, end, g, kind))
    return turns


def find_events(user: list[Segment], robot: list[Segment], duration_s: float, rules: EventRules) -> Events:
    """Every pause, turn end, interruption and backchannel on the timeline, with the robot's
    reaction to it (what ``summarize`` turns into rates and latencies)."""
    runs = merge(robot, rules.robot_merge_s)
    turns = user_turns(user, runs, rules)
    ev = Events()
    is_turn = [r.duration_s >= rules.turn_min_s for r in runs]
    for i, turn in enumerate(turns):
        next_start = turns[i + 1].start_s if i + 1 < len(turns) else duration_s
        for a, b in turn.pauses:
            if b - a < rules.pause_min_s:
                continue
            taken = [r for r, t in zip(runs, is_turn) if t and a <= r.start_s < b]
            ev.pauses.append({"start_s": a, "end_s": b, "taken": bool(taken),
                              "robot_start_s": taken[0].start_s if taken else None})
        if turn.kind in ("interruption", "backchannel"):
            over = active_at(runs, turn.start_s)
            stop_s = over.end_s
            event = {"user_start_s": turn.start_s, "user_end_s": turn.end_s,
                     "robot_stop_s": stop_s, "stopped": stop_s < turn.end_s,
                     "stop_latency_s": stop_s - turn.start_s}
            if turn.kind == "backchannel":
                ev.user_backchannels.append(event)
                continue
            event.update(_response(runs, is_turn, turn.end_s, next_start, rules, after=stop_s))
            ev.interruptions.append(event)
            continue
        holding = active_at(runs, turn.end_s)
        if holding is not None and holding.start_s < turn.start_s:
            continue  # the robot held the floor all along: no turn to take
        event = {"user_end_s": turn.end_s}
        event.update(_response(runs, is_turn, turn.end_s, next_start, rules))
        ev.turn_ends.append(event)
    for r, t in zip(runs, is_turn):
        if t:
            continue
        inside = next((u for u in turns if u.kind == "turn" and u.start_s <= r.start_s <= u.end_s), None)
        if inside is not None:
            ev.robot_backchannels.append({"start_s": r.start_s, "end_s": r.end_s})
    return ev


def _response(runs, is_turn, user_end_s: float, next_start_s: float, rules: EventRules, after: float = -np.inf) -> dict:
    """The robot's answer to a user turn ending at ``user_end_s``: Full-Duplex-Bench's TOR and
    latency (first robot sound after the end, negative counted as 0)."""
    lo = user_end_s - rules.early_s
    answer = [(r, t) for r, t in zip(runs, is_turn) if lo <= r.start_s < next_start_s and r.start_s > after]
    if not answer:
        return {"taken": False, "robot_start_s": None, "latency_s": None}
    span = answer[-1][0].end_s - answer[0][0].start_s
    taken = any(t for _, t in answer) or span >= rules.turn_min_s
    first = answer[0][0].start_s
    return {"taken": bool(taken), "robot_start_s": first,
            "latency_s": max(0.0, first - user_end_s) if taken else None}


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None}
    v = np.asarray(values, np.float64)
    return {"n": int(v.size), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90))}


def _rate(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def summarize(ev: Events, user: list[Segment], robot: list[Segment], duration_s: float) -> dict:
    """The numbers a person compares: rates, latencies (s), counts, times."""
    minutes = duration_s / 60.0
    n_bc = len(ev.robot_backchannels)
    return {
        "duration_s": duration_s,
        "user_speech_s": float(sum(s.duration_s for s in user)),
        "robot_speech_s": float(sum(s.duration_s for s in robot)),
        "user_segments": len(user),
        "robot_segments": len(robot),
        "overlap_s": overlap_s(user, robot),
        "pause": {"n": len(ev.pauses), "tor": _rate([p["taken"] for p in ev.pauses])},
        "backchannel": {"n": n_bc, "per_min": n_bc / minutes if minutes else None,
                        "per_s": n_bc / duration_s if duration_s else None},
        "turn_taking": {"n": len(ev.turn_ends), "tor": _rate([e["taken"] for e in ev.turn_ends]),
                        "latency_s": _stats([e["latency_s"] for e in ev.turn_ends if e["taken"]])},
        "interruption": {"n": len(ev.interruptions),
                         "stop_rate": _rate([e["stopped"] for e in ev.interruptions]),
                         "stop_latency_s": _stats([e["stop_latency_s"] for e in ev.interruptions if e["stopped"]]),
                         "tor": _rate([e["taken"] for e in ev.interruptions]),
                         "latency_s": _stats([e["latency_s"] for e in ev.interruptions if e["taken"]])},
        "user_backchannel": {"n": len(ev.user_backchannels),
                             "yield_rate": _rate([e["stopped"] for e in ev.user_backchannels])},
    }
