"""The first thing a person checks: does the jaw move with the voice, does the head move sanely.

One PNG, three panels on the heard timeline (seconds since the session started): the audio
envelopes, jaw opening (the FLAME value at its show time, and the motor command shifted by
the actuator lead so both should sit on the voice), and the neck.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def envelope(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """RMS per ``hop_s`` window: (times_s of window starts, rms)."""
    hop = max(1, int(sample_rate * hop_s))
    n = audio.shape[0] // hop
    frames = np.asarray(audio[: n * hop], np.float32).reshape(n, hop)
    return np.arange(n) * hop_s, np.sqrt(np.mean(frames ** 2, axis=1))


def plot_session(
    path: str | Path,
    robot_audio: np.ndarray,
    user_audio: np.ndarray,
    sample_rate: int,
    flame_t_s: np.ndarray,
    flame_jaw: np.ndarray,
    flame_neck: np.ndarray,
    command_t_s: np.ndarray | None = None,
    command_jaw: np.ndarray | None = None,
    command_neck: dict[str, np.ndarray] | None = None,
    lead_s: float = 0.0,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(14, 8), sharex=True, constrained_layout=True)
    t, env = envelope(robot_audio, sample_rate)
    tu, envu = envelope(user_audio, sample_rate)
    axes[0].fill_between(tu, envu, color="0.75", label="user (heard by the robot)")
    axes[0].plot(t, env, color="tab:blue", lw=0.8, label="robot voice (as heard)")
    axes[0].set_ylabel("audio RMS")
    axes[0].legend(loc="upper right")

    axes[1].plot(flame_t_s, flame_jaw, color="tab:orange", lw=1.0, label="FLAME jaw_pose[0] (rad) at show time")
    if command_t_s is not None and command_jaw is not None:
        axes[1].plot(command_t_s + lead_s, command_jaw, color="tab:red", lw=0.8, ls="--",
                     label=f"jaw command (sent {lead_s * 1000:.0f} ms early, shifted back)")
    ax_env = axes[1].twinx()
    ax_env.plot(t, env, color="tab:blue", lw=0.5, alpha=0.4)
    ax_env.set_yticks([])
    axes[1].set_ylabel("jaw (rad)")
    axes[1].legend(loc="upper right")

    for i, name in enumerate(("pitch", "yaw", "roll")):
        axes[2].plot(flame_t_s, flame_neck[:, i], lw=0.9, label=f"FLAME neck {name}")
    if command_t_s is not None and command_neck:
        for name, values in command_neck.items():
            axes[2].plot(command_t_s + lead_s, values, lw=0.6, ls="--", label=f"{name} command")
    axes[2].set_ylabel("neck (rad)")
    axes[2].set_xlabel("time since session start (s)")
    axes[2].legend(loc="upper right", ncol=2, fontsize="small")
    fig.suptitle("facebot session: voice envelope vs jaw opening and neck motion")
    fig.savefig(str(path), dpi=90)
    plt.close(fig)
