"""Second-order limiter: position, velocity and acceleration limits that a joint command never exceeds.

The limiter (``SecondOrderLimiter``) integrates ``v' = v + a dt``, ``p' = p + v' dt`` with
``|a| <= max_acceleration``, ``|v'| <= max_velocity`` and keeps the invariant that the joint
can always brake to rest inside ``[lower, upper]`` (``p + v|v| / (2 max_acceleration)`` stays
within the limits). Braking at full deceleration always satisfies every constraint and keeps
the invariant, so a feasible command exists at every tick, whatever the input or the tick
period. Within those bounds it tracks the target dead-beat (the commanded position equals the
target whenever the target is reachable at the limits), so it adds no lag to feasible motion;
far from the target it follows the time-optimal braking curve, so it never overshoots.
Live limit changes (``HeadController.reconfigure``, the node's parameters): a joint whose
state satisfies the new limits follows them at once; any other joint first brakes to rest at
the acceleration limit it was moving under, inside the range it was moving in (its invariant
guarantees that), its speed never growing; if it then rests outside the new range, it moves
straight into it at the smaller of the old and new velocity and acceleration limits, within
the hull of both ranges. From its first state that satisfies the new limits on, it follows
them. So no command steps beyond the old limits while braking, the stricter of the two while
moving into the new range, and the new ones after.
Acceleration is bang-bang when saturated (no jerk limit): "jerk-free-ish" only in that the
target path itself is C1 (Hermite interpolation, one-euro smoothing, min-jerk ease).
"""
from __future__ import annotations

import numpy as np


def _reach_velocity(e: np.ndarray, dt: float, amax: np.ndarray) -> np.ndarray:
    """Signed velocity ``w`` with ``w dt + w|w| / (2 amax) = e``: move this step, then brake at
    ``amax``, and cover exactly ``e``. Dead-beat (``e / dt``) for small ``e``, the braking curve
    ``sqrt(2 amax |e|)`` for large; written in the cancellation-free form."""
    return 2.0 * e / (dt + np.sqrt(dt * dt + 2.0 * np.abs(e) / amax))


SETTLED, BRAKING, ENTERING = 0, 1, 2  # per-joint phase of a live limit change


class SecondOrderLimiter:
    """Position/velocity/acceleration limiter with the "can always stop" invariant.

    State: position ``p`` and velocity ``v`` per joint. ``step(v_desired, dt)`` picks the
    velocity nearest ``v_desired`` in the set allowed by: ``|v' - v| <= amax dt``,
    ``|v'| <= vmax``, and the braking distance from ``p + v' dt`` staying inside
    ``[lower, upper]``; then integrates ``p' = p + v' dt``. ``track(x, xd, dt)`` is the
    desired velocity that reaches target ``x`` (moving at ``xd``) this step when it can, and
    otherwise approaches it on the braking curve without overshoot.

    ``retarget(...)`` changes the limits live without a step beyond them (see its docstring).
    """

    def __init__(self, lower, upper, vmax, amax) -> None:
        self._set_limits(lower, upper, vmax, amax)
        self.p = np.clip(np.zeros_like(self.lower), self.lower, self.upper)
        self.v = np.zeros_like(self.lower)
        self._settle()

    def _set_limits(self, lower, upper, vmax, amax) -> None:
        self.lower = np.asarray(lower, np.float64).copy()
        self.upper = np.asarray(upper, np.float64).copy()
        self.vmax = np.asarray(vmax, np.float64).copy()
        self.amax = np.asarray(amax, np.float64).copy()

    def _settle(self) -> None:
        """Every joint under the current limits: no live change in progress."""
        self.phase = np.full(self.lower.shape, SETTLED)
        self._base = self.limits

    @property
    def limits(self) -> tuple[np.ndarray, ...]:
        """The configured ``(lower, upper, vmax, amax)`` arrays."""
        return self.lower.copy(), self.upper.copy(), self.vmax.copy(), self.amax.copy()

    def reset(self, positions, velocities=None) -> None:
        p = np.asarray(positions, np.float64).copy()
        p[~np.isfinite(p)] = 0.0
        self.p = np.clip(p, self.lower, self.upper)
        v = np.zeros_like(self.p) if velocities is None else np.asarray(velocities, np.float64).copy()
        v[~np.isfinite(v)] = 0.0
        v = np.clip(v, -self.vmax, self.vmax)
        # keep the invariant: only velocities from which the joint can still stop inside
        v_hi = np.sqrt(2.0 * self.amax * (self.upper - self.p))
        v_lo = -np.sqrt(2.0 * self.amax * (self.p - self.lower))
        self.v = np.clip(v, v_lo, v_hi)
        self._settle()

    def feasible(self, limits=None) -> np.ndarray:
        """Per joint: whether the state satisfies ``limits`` (default: the configured ones),
        invariant included (within 1e-9 for rounding)."""
        lo, hi, vmax, amax = self.limits if limits is None else limits
        stop = self.p + self.v * np.abs(self.v) / (2.0 * amax)
        tol = 1e-9
        return ((self.p >= lo - tol) & (self.p <= hi + tol) & (np.abs(self.v) <= vmax + tol)
                & (stop >= lo - tol) & (stop <= hi + tol))

    def retarget(self, lower, upper, vmax, amax) -> None:
        """Live limit change. A joint whose state satisfies the new limits switches at once.
        Any other joint first brakes to rest within the limits it moved under (``BRAKING``:
        their invariant makes that stop inside their range), then, if it rests outside the
        new range, moves into it at the stricter of both velocity and acceleration limits
        (``ENTERING``); it switches to the new limits at the first state that satisfies
        them. A change during a change starts from the limits of the joint's last step."""
        used = self._step_limits()
        self._set_limits(lower, upper, vmax, amax)
        ok = self.feasible()
        self._base = tuple(np.where(ok, n, u) for n, u in zip(self.limits, used))
        self.phase = np.where(ok, SETTLED, np.where(self.v == 0.0, ENTERING, BRAKING))

    def _advance_phase(self) -> None:
        """Joints that now satisfy the new limits switch; braking joints at rest start entering."""
        ok = self.feasible()
        braked = (self.phase == BRAKING) & (self.v == 0.0)
        self.phase = np.where(ok, SETTLED, np.where(braked, ENTERING, self.phase))

    def _step_limits(self) -> tuple[np.ndarray, ...]:
        """Per joint, the limits of the next step: configured (settled), the base ones
        (braking), or entering: the hull of both ranges, the smaller vmax and amax."""
        new, base = self.limits, self._base
        entering = (np.minimum(base[0], new[0]), np.maximum(base[1], new[1]),
                    np.minimum(base[2], new[2]), np.minimum(base[3], new[3]))
        return tuple(np.where(self.phase == SETTLED, n, np.where(self.phase == BRAKING, b, e))
                     for n, b, e in zip(new, base, entering))

    def stopping_point(self) -> np.ndarray:
        return self.p + self.v * np.abs(self.v) / (2.0 * self.amax)

    def track(self, x: np.ndarray, xd: np.ndarray, dt: float, amax: np.ndarray | None = None) -> np.ndarray:
        e = (x - self.p) - xd * dt
        return xd + _reach_velocity(e, dt, self.amax if amax is None else amax)

    def step(self, v_desired: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if np.any(self.phase != SETTLED):
            self._advance_phase()
        lower, upper, vmax, amax = self._step_limits()
        p, v = self.p, self.v
        vd = np.where(np.isfinite(v_desired), v_desired, 0.0)
        if np.any(self.phase != SETTLED):  # braking joints stop; entering ones head for the new range
            inside = np.clip(p, self.lower, self.upper)
            vd = np.where(self.phase == BRAKING, 0.0, vd)
            vd = np.where(self.phase == ENTERING, self.track(inside, np.zeros_like(p), dt, amax), vd)
        dv = amax * dt
        lo = np.maximum(np.maximum(v - dv, -vmax), _reach_velocity(lower - p, dt, amax))
        hi = np.minimum(np.minimum(v + dv, vmax), _reach_velocity(upper - p, dt, amax))
        v_new = np.minimum(np.maximum(vd, lo), hi)
        # rounding can make the set look empty right at a bound: brake, which is always allowed
        brake = v - np.sign(v) * np.minimum(dv, np.abs(v))
        v_new = np.where(lo <= hi, v_new, brake)
        p_new = np.clip(p + v_new * dt, lower, upper)
        v_new = (p_new - p) / dt  # exactly what consecutive positions show
        a = np.clip((v_new - v) / dt, -amax, amax)
        if not (np.isfinite(p_new).all() and np.isfinite(v_new).all()):
            raise FloatingPointError("limiter produced a non-finite state")
        self.p, self.v = p_new, v_new
        return p_new.copy(), v_new.copy(), a

