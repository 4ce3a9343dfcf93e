"""What a step graph is to a runtime: positional data and state tensors in and out, and where
each KV slot output goes.

A graph is ``forward(*data_inputs, *state) -> (*data_outputs, *state_outputs)`` with static
shapes. A state output is either the next value of the whole tensor (``next.<name>``: conv
histories, counters) or, for a KV ring buffer, only the slots this step writes
(``slot.<name>`` [B, H, T, Dh]); the runtime writes those slots into the buffer in place
(:func:`apply_slot_updates`), so no step copies a whole cache. The graphs themselves are built
from the model in :mod:`facebot.export.graphs`; runners (:mod:`facebot.runtime.graph_runner`)
need only this description, or the manifest entry it writes (:meth:`StepGraph.describe`).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["SlotRule", "StepGraph", "apply_slot_updates"]


@dataclass(frozen=True)
class SlotRule:
    """Where the slot output of a KV state goes: axis 2 of the state, indices
    ``(counter + arange(count)) % capacity`` where counter is the pre-step value of the state
    ``offset_state`` or of the data input ``index_input``."""
    capacity: int
    count: int
    offset_state: Optional[str] = None
    index_input: Optional[str] = None

    def indices(self, counter: torch.Tensor) -> torch.Tensor:
        ar = torch.arange(self.count, device=counter.device, dtype=torch.long)
        return torch.remainder(counter.reshape(-1)[:1].long() + ar, self.capacity)

    def to_dict(self) -> dict:
        return {"capacity": self.capacity, "count": self.count,
                "offset_state": self.offset_state, "index_input": self.index_input}

    @classmethod
    def from_dict(cls, d: dict) -> "SlotRule":
        return cls(int(d["capacity"]), int(d["count"]), d.get("offset_state"), d.get("index_input"))


def apply_slot_updates(state: Dict[str, torch.Tensor], updates: Dict[str, torch.Tensor],
                       rules: Dict[str, SlotRule], data_inputs: Dict[str, torch.Tensor]) -> None:
    """Write each slot output into its state buffer (in place), using the counters' pre-step
    values: call before the counters are replaced by their next values."""
    for name, upd in updates.items():
        rule = rules[name]
        counter = state[rule.offset_state] if rule.offset_state else data_inputs[rule.index_input]
        state[name].index_copy_(2, rule.indices(counter), upd)


class StepGraph(nn.Module, abc.ABC):
    """Base of the graphs: names, example inputs, and which state outputs are slots."""

    name: str = ""
    data_inputs: Sequence[str] = ()
    data_outputs: Sequence[str] = ()

    def __init__(self) -> None:
        super().__init__()
        self.state_names: List[str] = []
        self.slot_rules: Dict[str, SlotRule] = {}
        self.meta: dict = {}  # graph facts the runtime needs (recorded in the manifest)
        self.training = False

    @abc.abstractmethod
    def init_state(self) -> Dict[str, torch.Tensor]:
        """The state at the start of a session, by name."""

    @abc.abstractmethod
    def example_data(self) -> Tuple[torch.Tensor, ...]:
        """Data inputs of the graph's shapes and dtypes (for tracing)."""

    def train(self, mode: bool = True) -> "StepGraph":
        return super().train(False)  # a step graph is inference only

    def example_inputs(self) -> Tuple[torch.Tensor, ...]:
        st = self.init_state()
        return (*self.example_data(), *[st[k] for k in self.state_names])

    @property
    def input_names(self) -> List[str]:
        return list(self.data_inputs) + ["state." + k for k in self.state_names]

    @property
    def output_names(self) -> List[str]:
        return list(self.data_outputs) + [
            ("slot." if k in self.slot_rules else "next.") + k for k in self.state_names]

    def describe(self, args: Tuple[torch.Tensor, ...], outs: Tuple[torch.Tensor, ...]) -> dict:
        """The graph's I/O (name, shape, dtype) for example inputs ``args`` and the outputs they
        gave, its state names, slot rules and meta: the part of a manifest entry (and of a
        runner's spec) that the graph itself determines."""
        def io(names, tensors):
            return [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                    for n, t in zip(names, tensors)]
        return {"inputs": io(self.input_names, args), "outputs": io(self.output_names, outs),
                "data_inputs": list(self.data_inputs), "data_outputs": list(self.data_outputs),
                "state": list(self.state_names),
                "slots": {k: r.to_dict() for k, r in self.slot_rules.items()}, "meta": dict(self.meta)}

    def _ring_rules(self, state: Dict[str, torch.Tensor], new: Dict[str, torch.Tensor]) -> None:
        """KV ring buffers (names ``<prefix>layers.{i}.k|v``) whose step output is smaller than
        the buffer are slots, counted by ``<prefix>offset``."""
        for k in self.state_names:
            if new[k].shape != state[k].shape:
                prefix = k.rsplit("layers.", 1)[0]
                self.slot_rules[k] = SlotRule(capacity=state[k].shape[2], count=new[k].shape[2],
                                              offset_state=prefix + "offset")

    def _pack(self, data: Tuple[torch.Tensor, ...], new: Dict[str, torch.Tensor]):
        return (*data, *[new[k] for k in self.state_names])
