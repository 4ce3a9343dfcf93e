"""The TensorRT engine cache, without TensorRT: keys, hits and misses, forced rebuilds, the reasons
given for a rebuild, damaged entries, and atomic stores."""
import dataclasses

import pytest

from facebot.runtime.engine_cache import EngineCache, EngineKey, config_hash, file_hash


def _key(**kw):
    base = dict(graph="temporal", onnx_hash="a" * 32, weights_hash="w" * 32,
                config_hash=config_hash({"dim": 64, "layers": 2}), precision="fp16",
                trt_version="10.3.0", gpu="NVIDIA H100 sm_90",
                options={"workspace_bytes": 1 << 30, "opt_level": 3})
    base.update(kw)
    return EngineKey(**base)


class Builder:
    """A build_fn that counts its calls and returns different bytes each time."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return b"engine-%d-" % self.calls + bytes(range(256))


CHANGES = {"graph": "depth", "onnx_hash": "b" * 32, "weights_hash": "v" * 32,
           "config_hash": config_hash({"dim": 128}), "precision": "fp32", "trt_version": "10.4.0",
           "gpu": "NVIDIA Orin sm_87", "options": {"workspace_bytes": 2 << 30, "opt_level": 3}}


def test_every_field_changes_the_path(tmp_path):
    cache = EngineCache(tmp_path)
    paths = {cache.path_for(_key())}
    for name, value in CHANGES.items():
        paths.add(cache.path_for(_key(**{name: value})))
    assert len(paths) == 1 + len(CHANGES)
    assert cache.path_for(_key()).name.startswith("temporal-")
    assert cache.path_for(_key()).suffix == ".engine"


def test_key_is_stable():
    a = _key(options={"opt_level": 3, "workspace_bytes": 1 << 30})
    b = _key(options=[("workspace_bytes", 1 << 30), ("opt_level", 3)])
    assert a == b and a.digest() == b.digest() and hash(a) == hash(b)
    assert EngineKey.from_dict(a.to_dict()) == a
    assert config_hash({"x": 1, "y": [1, 2]}) == config_hash({"y": [1, 2], "x": 1})


def test_lookup_hit_and_miss(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = _key()
    assert cache.lookup(key) is None
    assert "no engine" in cache.explain_miss(key)
    path = cache.store(key, b"serialized")
    assert cache.lookup(key) == path and path.read_bytes() == b"serialized"
    assert cache.sidecar_for(key).is_file()
    assert cache.explain_miss(key) == ""
    assert cache.lookup(_key(precision="fp32")) is None


def test_get_or_build_builds_once(tmp_path):
    cache, build, logs = EngineCache(tmp_path), Builder(), []
    first = cache.get_or_build(_key(), build, log=logs.append)
    again = cache.get_or_build(_key(), build, log=logs.append)
    assert build.calls == 1 and first == again
    assert "from cache" in logs[-1]


def test_force_engine_update_rebuilds_and_replaces(tmp_path):
    cache, build = EngineCache(tmp_path), Builder()
    key = _key()
    first = cache.get_or_build(key, build, log=lambda s: None)
    assert "forced" in cache.explain_miss(key, force_engine_update=True)
    second = cache.get_or_build(key, build, force_engine_update=True, log=lambda s: None)
    assert build.calls == 2 and second != first
    assert cache.path_for(key).read_bytes() == second
    assert cache.lookup(key) is not None
    assert cache.lookup(key, force_engine_update=True) is None
    assert not cache.path_for(key).exists() and not cache.sidecar_for(key).exists()


@pytest.mark.parametrize("field, label", [("weights_hash", "weights hash"),
                                          ("trt_version", "TensorRT version"), ("gpu", "GPU"),
                                          ("precision", "precision"), ("config_hash", "config"),
                                          ("options", "builder options")])
def test_changed_field_invalidates_with_reason(tmp_path, field, label):
    cache, build, logs = EngineCache(tmp_path), Builder(), []
    old = _key()
    cache.get_or_build(old, build, log=logs.append)
    new = _key(**{field: CHANGES[field]})
    assert cache.lookup(new) is None
    assert [k for _, k in cache.stale_entries(new)] == [old]
    reason = cache.explain_miss(new)
    assert reason.startswith(label) and "changed from" in reason
    if field == "trt_version":
        assert reason == "TensorRT version changed from 10.3.0 to 10.4.0"
    cache.get_or_build(new, build, log=logs.append)
    assert build.calls == 2
    assert any(reason in line for line in logs)
    assert cache.stale_entries(new) == []  # the old engine was pruned
    assert not cache.path_for(old).exists()


def test_keep_stale_entries(tmp_path):
    cache, build = EngineCache(tmp_path), Builder()
    cache.get_or_build(_key(), build, log=lambda s: None)
    cache.get_or_build(_key(precision="fp32"), build, log=lambda s: None, prune=False)
    assert cache.lookup(_key()) is not None and cache.lookup(_key(precision="fp32")) is not None


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped", "no_sidecar", "bad_sidecar",
                                    "foreign_sidecar"])
def test_damaged_entry_is_a_miss(tmp_path, damage):
    cache, build = EngineCache(tmp_path), Builder()
    key = _key()
    good = cache.get_or_build(key, build, log=lambda s: None)
    engine, sidecar = cache.path_for(key), cache.sidecar_for(key)
    if damage == "empty":
        engine.write_bytes(b"")
    elif damage == "truncated":
        engine.write_bytes(good[:-10])
    elif damage == "flipped":
        engine.write_bytes(bytes([good[0] ^ 1]) + good[1:])
    elif damage == "no_sidecar":
        sidecar.unlink()
    elif damage == "bad_sidecar":
        sidecar.write_text("{not json")
    else:  # a record for another key under this file name
        other = cache.store(_key(precision="int8"), good)
        sidecar.write_text(other.with_suffix(".json").read_text())
    assert cache.lookup(key) is None
    assert cache.explain_miss(key) != ""
    rebuilt = cache.get_or_build(key, build, log=lambda s: None)
    assert build.calls == 2 and cache.lookup(key) is not None
    assert engine.read_bytes() == rebuilt


def test_failed_build_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path / "engines")

    def broken():
        raise RuntimeError("builder failed")

    with pytest.raises(RuntimeError, match="builder failed"):
        cache.get_or_build(_key(), broken, log=lambda s: None)
    assert cache.lookup(_key()) is None
    assert not (tmp_path / "engines").exists() or list((tmp_path / "engines").iterdir()) == []
    with pytest.raises(ValueError):
        cache.get_or_build(_key(), lambda: b"", log=lambda s: None)
    assert list((tmp_path / "engines").glob("*")) == []


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path)
    key = _key()
    cache.store(key, b"old engine")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("facebot.runtime.engine_cache.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.store(key, b"new engine")
    monkeypatch.undo()
    assert list(tmp_path.glob("*.tmp")) == []
    assert cache.lookup(key) is None  # the old engine lost its record: never half trusted


def test_invalidate(tmp_path):
    cache, build = EngineCache(tmp_path), Builder()
    for g in ("temporal", "depth", "face-head"):
        cache.get_or_build(_key(graph=g), build, log=lambda s: None)
    timing = cache.timing_cache_path("10.3.0", "NVIDIA H100 sm_90")
    timing.write_bytes(b"timing")
    assert cache.invalidate("face") == 0
    assert cache.invalidate("face-head") == 2
    assert cache.lookup(_key(graph="temporal")) is not None
    assert cache.invalidate() == 4
    assert [p.name for p in tmp_path.iterdir()] == [timing.name]
    assert EngineCache(tmp_path / "absent").invalidate() == 0


def test_timing_cache_path(tmp_path):
    cache = EngineCache(tmp_path)
    p = cache.timing_cache_path("10.3.0.26", "NVIDIA GeForce RTX 4090 sm_89")
    assert p.parent == tmp_path
    assert p.name == "timing-10.3.0.26-NVIDIA_GeForce_RTX_4090_sm_89.cache"
    assert cache.timing_cache_path("10.3.0.26", "Orin sm_87") != p


def test_file_hash(tmp_path):
    a, b = tmp_path / "g.onnx", tmp_path / "g.onnx.data"
    a.write_bytes(b"graph")
    b.write_bytes(b"weights")
    h = file_hash(a, b)
    assert h == file_hash(a, b) and h != file_hash(a)
    b.write_bytes(b"weights2")
    assert file_hash(a, b) != h


def test_key_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _key().precision = "fp32"
