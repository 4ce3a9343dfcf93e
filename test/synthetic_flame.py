"""A small stand-in FLAME model (the official arrays' layout, not a face) for the tests and
``bench/bench_renderer.py``: the real FLAME model is licensed and not on these machines."""
from __future__ import annotations

import math

import numpy as np

from facebot.face.flame_mesh import N_JOINTS, N_POSE_FEATURES, N_SHAPE

__all__ = ["synthetic_flame"]


def _uv_sphere(centre, radii, n_lat: int, n_lon: int):
    """Vertices and outward-facing triangles of a latitude/longitude ellipsoid (no pole caps)."""
    lat = np.linspace(-math.pi / 2, math.pi / 2, n_lat + 2)[1:-1]
    lon = np.linspace(0.0, 2 * math.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.cos(la) * np.sin(lo), np.sin(la), np.cos(la) * np.cos(lo)], axis=-1).reshape(-1, 3)
    verts = np.asarray(centre) + unit * np.asarray(radii)
    tris = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tris += [(a, b, d), (a, d, c)]
    tris = np.asarray(tris, np.int64)
    # orient outwards: the normal must point away from the centre
    t = verts[tris]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    flip = np.einsum("ij,ij->i", n, t.mean(axis=1) - np.asarray(centre)) < 0
    tris[flip] = tris[flip][:, ::-1]
    return verts, tris


def synthetic_flame(n_lat: int = 24, n_lon: int = 32, eye_res: int = 8, seed: int = 0,
                    posedirs_scale: float = 1e-3) -> dict[str, np.ndarray]:
    """A small stand-in model in FLAME's layout (not a face).

    An ellipsoid head (skinned to the neck, its lower front part blended onto the jaw) and two
    eyeball spheres (skinned to the eye joints), with random shape / expression blendshapes and
    pose correctives. ``J_regressor`` is dense; each joint is the mean of a set of vertices.
    The defaults give ~830 vertices; ``n_lat=70, n_lon=72`` is about FLAME's size (5k / 10k).
    """
    rng = np.random.default_rng(seed)
    head_v, head_f = _uv_sphere((0.0, 0.0, 0.0), (0.075, 0.1, 0.09), n_lat, n_lon)
    parts_v, parts_f, offset = [head_v], [head_f], head_v.shape[0]
    eye_ids = []
    for x in (0.032, -0.032):  # left eye (joint 3) sits at +x, the viewer's right
        ev, ef = _uv_sphere((x, 0.022, 0.08), (0.012, 0.012, 0.012), eye_res, eye_res + 2)
        parts_v.append(ev)
        parts_f.append(ef + offset)
        eye_ids.append(np.arange(offset, offset + ev.shape[0]))
        offset += ev.shape[0]
    v = np.concatenate(parts_v)
    f = np.concatenate(parts_f)
    nv = v.shape[0]
    nh = head_v.shape[0]
    weights = np.zeros((nv, N_JOINTS))
    hy, hz = head_v[:, 1], head_v[:, 2]
    jaw_w = np.clip((-0.01 - hy) / 0.03, 0.0, 1.0) * np.clip(hz / 0.03, 0.0, 1.0)
    weights[:nh, 2] = jaw_w
    weights[:nh, 1] = 1.0 - jaw_w
    weights[eye_ids[0], 3] = 1.0
    weights[eye_ids[1], 4] = 1.0
    jreg = np.zeros((N_JOINTS, nv))
    jreg[0, :nh] = 1.0 / nh
    ring = np.argsort(np.abs(hy + 0.09))[: n_lon]  # a bottom ring -> neck joint on the axis
    jreg[1, ring] = 1.0 / ring.size
    jaw_ring = np.argsort(np.abs(hy + 0.02))[: n_lon]  # a ring at mouth height -> jaw joint
    jreg[2, jaw_ring] = 1.0 / jaw_ring.size
    jreg[3, eye_ids[0]] = 1.0 / eye_ids[0].size
    jreg[4, eye_ids[1]] = 1.0 / eye_ids[1].size

    def smooth_fields(k: int, scale: float) -> np.ndarray:  # [V, 3, k] low-frequency displacements
        freq = rng.normal(0.0, 25.0, (k, 3))
        phase = rng.uniform(0.0, 2 * math.pi, k)
        direction = rng.normal(0.0, scale, (k, 3))
        wave = np.cos(v @ freq.T + phase)  # [V, k]
        return wave[:, None, :] * direction.T[None, :, :]

    shapedirs = smooth_fields(N_SHAPE + 100, 1e-3)
    posedirs = smooth_fields(N_POSE_FEATURES, posedirs_scale) if posedirs_scale else np.zeros((nv, 3, N_POSE_FEATURES))
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": jreg,
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "f": f.astype(np.uint32),
    }
