"""One conversation in, every metric out (the dict that goes into eval.json)."""
from __future__ import annotations

from dataclasses import asdict

from facebot.eval.face import face_metrics
from facebot.eval.inputs import Conversation
from facebot.eval.segments import speech_segments
from facebot.eval.turns import EventRules, find_events, summarize


def evaluate(conv: Conversation, rules: EventRules | None = None) -> dict:
    rules = rules or EventRules()
    user = speech_segments(conv.user)
    robot = speech_segments(conv.robot)
    events = find_events(user, robot, conv.duration_s, rules)
    return {
        "name": conv.name,
        "path": conv.path,
        "rules": asdict(rules),
        "duplex": summarize(events, user, robot, conv.duration_s),
        "face": face_metrics(conv),
        "segments": {"user": [[s.start_s, s.end_s] for s in user], "robot": [[s.start_s, s.end_s] for s in robot]},
        "events": asdict(events),
        "notes": list(conv.notes),
    }
