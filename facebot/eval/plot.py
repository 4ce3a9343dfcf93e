"""The timeline picture: who spoke when, what the robot did at each turn event, jaw vs voice."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facebot.eval.face import HOP_S, voice_envelope
from facebot.eval.inputs import Conversation


def plot_timeline(path: str | Path, conv: Conversation, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_jaw) = plt.subplots(2, 1, figsize=(14, 6), sharex=True, constrained_layout=True,
                                     gridspec_kw={"height_ratios": [1.2, 1]})
    seg = result["segments"]
    ax.broken_barh([(a, b - a) for a, b in seg["user"]], (1.1, 0.8), color="0.6", label="user speech")
    ax.broken_barh([(a, b - a) for a, b in seg["robot"]], (0.1, 0.8), color="tab:blue", label="robot speech")
    ev = result["events"]
    for p in ev["pauses"]:
        ax.axvspan(p["start_s"], p["end_s"], ymin=0.5, ymax=1.0, color="tab:red" if p["taken"] else "tab:green", alpha=0.25)
    for e in ev["turn_ends"]:
        if e["taken"]:
            _arrow(ax, e["user_end_s"], e["robot_start_s"], 1.0, f"{e['latency_s']:.2f} s", "tab:green")
        else:
            ax.text(e["user_end_s"], 1.0, "no reply", color="tab:red", fontsize=8)
    for e in ev["interruptions"]:
        _arrow(ax, e["user_start_s"], e["robot_stop_s"], 0.5, f"stop {e['stop_latency_s']:.2f} s",
               "tab:purple" if e["stopped"] else "tab:red")
    for e in ev["user_backchannels"]:
        ax.text(e["user_start_s"], 2.0, "yield" if e["stopped"] else "kept on", fontsize=8)
    for b in ev["robot_backchannels"]:
        ax.text(b["start_s"], -0.15, "bc", color="tab:blue", fontsize=8)
    ax.set_yticks([0.5, 1.5], ["robot", "user"])
    ax.set_ylim(-0.3, 2.3)
    ax.set_title(f"{result['name']}: speech (silero-vad); pauses green = held, red = taken; "
                 "arrows: turn-taking latency, interruption stop latency")
    env = voice_envelope(conv.robot)
    t = np.arange(env.shape[0]) * HOP_S
    ax_jaw.fill_between(t, env / max(env.max(), 1e-9), color="tab:blue", alpha=0.3, label="robot voice envelope (heard)")
    face = result["face"]
    for track, style, what in ((conv.jaw_shown, "-", "lip_sync_shown"), (conv.jaw_command, "--", "lip_sync_command")):
        if track is not None and track.value.size and np.ptp(track.value) > 0:
            lag = face[what]["lag_ms"] if face[what] else None
            label = f"{'jaw shown' if what.endswith('shown') else 'jaw command'} (lag {lag:+.0f} ms)" if lag is not None else what
            v = track.value - track.value.min()
            ax_jaw.plot(track.t_s, v / max(v.max(), 1e-9), style, lw=0.8, label=label)
    ax_jaw.set_ylabel("normalised")
    ax_jaw.set_xlabel("heard time (s)")
    ax_jaw.legend(loc="upper right", fontsize="small")
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def _arrow(ax, x0: float, x1: float, y: float, text: str, color: str) -> None:
    ax.annotate("", xy=(x1, y), xytext=(x0, y), arrowprops={"arrowstyle": "->", "color": color})
    ax.text((x0 + x1) / 2, y + 0.05, text, color=color, fontsize=8, ha="center")
