"""The first thing a person checks: does the jaw move with the voice, does the head move sanely.

One PNG, three panels on the heard timeline (seconds since the session started): the audio
envelopes, jaw opening (the FLAME value at its show time, and the motor command shifted by
the actuator lead so both should sit on the voice), and the neck.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


HOP_S = 0.01  # the envelope's window
MAX_POINTS = 20_000  # per line: ~16 per pixel column of the 1260 px wide figure


def min_max_points(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` unchanged up to ``max_points``; beyond, each of ``max_points / 2`` runs of
    consecutive points is reduced to its lowest and highest, in order. Runs narrower than a
    pixel column draw the same picture, and an hours-long session costs the plot no more
    memory than a few minutes."""
    n = y.shape[0]
    if n <= max_points:
        return x, y
    run = -(-n // (max_points // 2))
    starts = np.arange(0, n, run)
    keep = np.empty(2 * starts.shape[0], np.int64)
    for k, start in enumerate(starts):
        part = y[start:start + run]
        lo, hi = start + int(np.argmin(part)), start + int(np.argmax(part))
        keep[2 * k], keep[2 * k + 1] = min(lo, hi), max(lo, hi)
    return x[keep], y[keep]


class RunningEnvelope:
    """RMS per ``hop_s`` window of a stream pushed block by block, appended to ``spool``
    (a float32 ``Spool``): the audio is never held whole. A last partial window is dropped."""

    def __init__(self, sample_rate: int, spool, hop_s: float = HOP_S) -> None:
        self.hop = max(1, int(sample_rate * hop_s))
        self.spool = spool
        self._rest = np.zeros(0, np.float32)

    def push(self, samples: np.ndarray) -> None:
        audio = np.concatenate([self._rest, np.asarray(samples, np.float32).reshape(-1)])
        n = audio.shape[0] // self.hop
        if n:
            self.spool.append(np.sqrt(np.mean(audio[: n * self.hop].reshape(n, self.hop) ** 2, axis=1)))
        self._rest = audio[n * self.hop:]

    def values(self) -> np.ndarray:
        return self.spool.read()

    def close(self) -> None:
        self.spool.close()


def plot_session(
    path: str | Path,
    robot_envelope: np.ndarray,
    user_envelope: np.ndarray,
    flame_t_s: np.ndarray,
    flame_jaw: np.ndarray,
    flame_neck: np.ndarray,
    command_t_s: np.ndarray | None = None,
    command_jaw: np.ndarray | None = None,
    command_neck: dict[str, np.ndarray] | None = None,
    lead_s: float = 0.0,
    hop_s: float = HOP_S,
) -> None:
    """``*_envelope``: RMS per ``hop_s`` window from the session's start (``RunningEnvelope``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(14, 8), sharex=True, constrained_layout=True)
    t, env = min_max_points(np.arange(robot_envelope.shape[0]) * hop_s, robot_envelope)
    tu, envu = min_max_points(np.arange(user_envelope.shape[0]) * hop_s, user_envelope)
    axes[0].fill_between(tu, envu, color="0.75", label="user (heard by the robot)")
    axes[0].plot(t, env, color="tab:blue", lw=0.8, label="robot voice (as heard)")
    axes[0].set_ylabel("audio RMS")
    axes[0].legend(loc="upper right")

    axes[1].plot(*min_max_points(flame_t_s, flame_jaw), color="tab:orange", lw=1.0, label="FLAME jaw_pose[0] (rad) at show time")
    if command_t_s is not None and command_jaw is not None:
        axes[1].plot(*min_max_points(command_t_s + lead_s, command_jaw), color="tab:red", lw=0.8, ls="--",
                     label=f"jaw command (sent {lead_s * 1000:.0f} ms early, shifted back)")
    ax_env = axes[1].twinx()
    ax_env.plot(t, env, color="tab:blue", lw=0.5, alpha=0.4)
    ax_env.set_yticks([])
    axes[1].set_ylabel("jaw (rad)")
    axes[1].legend(loc="upper right")

    for i, name in enumerate(("pitch", "yaw", "roll")):
        axes[2].plot(*min_max_points(flame_t_s, flame_neck[:, i]), lw=0.9, label=f"FLAME neck {name}")
    if command_t_s is not None and command_neck:
        for name, values in command_neck.items():
            axes[2].plot(*min_max_points(command_t_s + lead_s, values), lw=0.6, ls="--", label=f"{name} command")
    axes[2].set_ylabel("neck (rad)")
    axes[2].set_xlabel("time since session start (s)")
    axes[2].legend(loc="upper right", ncol=2, fontsize="small")
    fig.suptitle("facebot session: voice envelope vs jaw opening and neck motion")
    fig.savefig(str(path), dpi=90)
    plt.close(fig)
