"""The first-order smoothing every procedural sub-motion uses to move toward its target."""
from __future__ import annotations

import math


def first_order_share(dt: float, tau: float) -> float:
    """Share of the way a first-order filter with time constant ``tau`` moves toward its
    target in ``dt`` (all of it when ``tau`` is 0)."""
    return 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)
