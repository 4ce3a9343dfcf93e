"""Checkpoint import from safetensors (never pickle), with one clear error for a bad file.

``load_state(module, path_or_dict, key_map)`` reads a ``.safetensors`` file (or takes a dict of
tensors), renames keys, merges moshi's in-memory per-step attention keys into Kyutai's file
layout, casts floating tensors to the module's dtype (Kyutai ships bf16) and copies them in.
Any missing, unexpected or shape-mismatched key is reported together in one
:class:`CheckpointError`.

Key layouts accepted for attention weights (both are what moshi produces):

* Kyutai's files: ``...self_attn.in_proj_weight`` ([mult*3*D, D], fused QKV, per-step weights
  stacked on dim 0) and ``...self_attn.out_proj.weight`` ([mult*D, D]);
* moshi's ``state_dict()`` in memory: ``...self_attn.in_projs.{i}.weight`` and
  ``...self_attn.out_projs.{i}.weight``; these are concatenated into the former.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from facebot.io.atomic import atomic_path
from facebot.errors import FacebotError

__all__ = ["CheckpointError", "load_state", "read_safetensors", "save_safetensors",
           "merge_per_step_keys", "check_state"]

KeyMap = Union[None, Mapping[str, str], Callable[[str], Optional[str]],
               List[Tuple[str, str]]]


class CheckpointError(FacebotError):
    """A checkpoint that does not fit the module. ``missing``, ``unexpected`` and ``mismatched``
    ([(key, file shape, module shape)]) hold the details; ``str()`` lists them."""

    def __init__(self, source: str, missing: List[str], unexpected: List[str],
                 mismatched: List[Tuple[str, tuple, tuple]], note: str = ""):
        self.source, self.missing, self.unexpected, self.mismatched = (
            source, missing, unexpected, mismatched)
        lines = [f"checkpoint {source} does not match the model"
                 f" ({len(missing)} missing, {len(unexpected)} unexpected,"
                 f" {len(mismatched)} with other shapes){note}"]
        if missing:
            lines.append("  missing keys (in the model, not in the file):")
            lines += [f"    {k}" for k in _abbrev(missing)]
        if unexpected:
            lines.append("  unexpected keys (in the file, not in the model):")
            lines += [f"    {k}" for k in _abbrev(unexpected)]
        if mismatched:
            lines.append("  shape mismatches (file vs model):")
            lines += [f"    {k}: {list(a)} vs {list(b)}" for k, a, b in mismatched[:40]]
            if len(mismatched) > 40:
                lines.append(f"    ... and {len(mismatched) - 40} more")
        super().__init__("\n".join(lines))


def _abbrev(keys: List[str], limit: int = 40) -> List[str]:
    """Group keys that differ only by layer index: layers.{0..31}.x -> one line."""
    groups: Dict[str, List[int]] = {}
    order: List[str] = []
    for k in keys:
        m = re.search(r"\.(\d+)\.", k)
        pat = k if m is None else k[:m.start()] + ".{}." + k[m.end():]
        idx = -1 if m is None else int(m.group(1))
        if pat not in groups:
            groups[pat] = []
            order.append(pat)
        groups[pat].append(idx)
    out = []
    for pat in order:
        ids = sorted(groups[pat])
        if ids == [-1]:
            out.append(pat)
        elif len(ids) == 1:
            out.append(pat.replace("{}", str(ids[0])))
        else:
            rng = (f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1))
                   else ",".join(map(str, ids)))
            out.append(pat.replace("{}", "{" + rng + "}"))
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def _check_path(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix not in (".safetensors", ".sft", ".sfts"):
        raise CheckpointError(str(path), [], [], [],
                              note=": only .safetensors files are read (no pickle)")


def read_safetensors(path: Union[str, Path], device: str = "cpu") -> Dict[str, torch.Tensor]:
    """All tensors of a safetensors file (never unpickles anything)."""
    path = Path(path)
    _check_path(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(str(path), [], [], [],
                              note=f": not a readable safetensors file ({err})") from None


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Union[str, Path]) -> None:
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


class _Entry:
    """A tensor of the source, known by its shape, loaded only when copied."""

    __slots__ = ("shape", "load")

    def __init__(self, shape, load: Callable[[], torch.Tensor]):
        self.shape = tuple(int(d) for d in shape)
        self.load = load


_PER_STEP = re.compile(r"^(.*\.)(in_projs|out_projs)\.(\d+)\.(weight|bias)$")


def merge_per_step_keys(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """moshi in-memory keys ``X.in_projs.{i}.weight`` -> ``X.in_proj_weight`` (concatenated on
    dim 0), ``X.out_projs.{i}.weight`` -> ``X.out_proj.weight``; other keys unchanged."""
    entries = _merge_entries({k: _Entry(v.shape, (lambda v=v: v)) for k, v in sd.items()})
    return {k: e.load() for k, e in entries.items()}


def _merge_entries(sd: Mapping[str, _Entry]) -> Dict[str, _Entry]:
    out: Dict[str, _Entry] = {}
    parts: Dict[str, Dict[int, _Entry]] = {}
    for k, v in sd.items():
        m = _PER_STEP.match(k)
        if m is None:
            out[k] = v
            continue
        prefix, kind, i, leaf = m.groups()
        if kind == "in_projs":
            target = prefix + ("in_proj_weight" if leaf == "weight" else "in_proj_bias")
        else:
            target = prefix + "out_proj." + leaf
        parts.setdefault(target, {})[int(i)] = v
    for target, d in parts.items():
        idx = sorted(d)
        if idx != list(range(len(idx))):
            raise CheckpointError("(state dict)", [], [], [],
                                  note=f": per-step weights of {target} are not 0..n-1: {idx}")
        es = [d[i] for i in idx]
        if len(es) == 1:
            out[target] = es[0]
        else:
            shape = (sum(e.shape[0] for e in es),) + es[0].shape[1:]
            out[target] = _Entry(shape, lambda es=es: torch.cat([e.load() for e in es], 0))
    return out


def _apply_key_map(sd: Mapping[str, _Entry], key_map: KeyMap) -> Dict[str, _Entry]:
    if key_map is None:
        return dict(sd)
    out: Dict[str, _Entry] = {}
    for k, v in sd.items():
        if callable(key_map):
            nk = key_map(k)
        elif isinstance(key_map, list):  # [(prefix_in_file, prefix_in_module)], first match wins
            nk = k
            for a, b in key_map:
                if k.startswith(a):
                    nk = b + k[len(a):]
                    break
        else:
            nk = key_map.get(k, k)
        if nk is None:  # dropped on purpose
            continue
        if nk in out:
            raise CheckpointError("(key map)", [], [], [], note=f": two file keys map to {nk}")
        out[nk] = v
    return out


def check_state(module_state: Mapping[str, torch.Tensor], file_state: Mapping,
                source: str, ignore: Iterable[str] = ()) -> None:
    """Raise one CheckpointError for missing / unexpected / shape-mismatched keys (values of
    ``file_state`` need a ``.shape``)."""
    ignore = set(ignore)
    missing = [k for k in module_state if k not in file_state and k not in ignore]
    unexpected = [k for k in file_state if k not in module_state and k not in ignore]
    mismatched = [(k, tuple(file_state[k].shape), tuple(module_state[k].shape))
                  for k in module_state if k in file_state
                  and tuple(file_state[k].shape) != tuple(module_state[k].shape)]
    if missing or unexpected or mismatched:
        raise CheckpointError(source, missing, unexpected, mismatched)


def load_state(module: nn.Module, path_or_dict: Union[str, Path, Mapping[str, torch.Tensor]],
               key_map: KeyMap = None, *, strict: bool = True,
               ignore: Iterable[str] = ()) -> nn.Module:
    """Copy a checkpoint into ``module`` (in place) and return it.

    ``key_map``: None, a dict {file key: module key}, a callable (file key -> module key, or None
    to drop), or a list of (file prefix, module prefix) pairs. Keys are renamed first, then moshi's
    per-step keys are merged. Tensors are cast to the dtype of the tensor they replace (Kyutai
    ships bf16). With ``strict`` any missing or unexpected key is an error; shape
    mismatches always are. ``ignore``: keys exempt from the check. A file is validated from its
    header before any tensor is read, then read one tensor at a time (7B files fit in memory once).
    """
    if isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        _check_path(path)
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                entries = {k: _Entry(f.get_slice(k).get_shape(), (lambda k=k: f.get_tensor(k)))
                           for k in f.keys()}
                _load_entries(module, entries, key_map, strict, ignore, str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(str(path), [], [], [],
                                  note=f": not a readable safetensors file ({err})") from None
    else:
        entries = {k: _Entry(v.shape, (lambda v=v: v)) for k, v in path_or_dict.items()}
        _load_entries(module, entries, key_map, strict, ignore, "(state dict)")
    return module


def _load_entries(module, entries, key_map, strict, ignore, source) -> None:
    entries = _merge_entries(_apply_key_map(entries, key_map))
    target = module.state_dict()
    if strict:
        check_state(target, entries, source, ignore)
    else:
        mismatched = [(k, entries[k].shape, tuple(target[k].shape)) for k in target
                      if k in entries and entries[k].shape != tuple(target[k].shape)]
        if mismatched:
            raise CheckpointError(source, [], [], mismatched)
    with torch.no_grad():
        for k, t in target.items():
            if k not in entries:
                continue
            t.copy_(entries[k].load())  # casts (Kyutai's bf16 -> the module's dtype)
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                # a NaN weight makes every output NaN: silence from a robot that seems to run
                raise CheckpointError(source, [], [], [], note=f": tensor {k} holds NaN or infinite values")
