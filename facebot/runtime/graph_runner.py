"""Running one step graph with its state kept where it lives between steps.

A :class:`GraphRunner` owns a graph's state buffers (torch tensors on the execution device) and
its output buffers. ``run(data)`` executes the graph once, then updates the state without
copying it: KV ring buffers get their new slots written in place (the slot rules of
:mod:`facebot.runtime.step_graph`), every other state tensor swaps with the buffer its next value was
written to (ping-pong). Subclasses only bind buffers and execute:

* :class:`TorchGraphRunner` calls the graph module itself (eager; the reference that the
  exported graphs are compared with, and the path for torch-only machines);
* :class:`OrtGraphRunner` runs the ONNX graph with onnxruntime through IO binding, so inputs,
  state and outputs are read and written where they are (CPU or CUDA memory), never copied in
  or out by the session;
* ``TrtGraphRunner`` (:mod:`facebot.runtime.tensorrt_runtime`) does the same with a TensorRT
  engine and persistent device buffers.

The data outputs returned by ``run`` are the runner's own buffers: read them (or clone them)
before the next ``run`` of the same runner.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .step_graph import SlotRule, StepGraph, apply_slot_updates

__all__ = ["GraphRunner", "TorchGraphRunner", "OrtGraphRunner", "torch_dtype", "GraphSpec"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int64": torch.int64, "int32": torch.int32, "bool": torch.bool, "uint8": torch.uint8}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


class GraphSpec:
    """What a runner needs to know of a graph: its I/O (name, shape, dtype), state names and
    slot rules, and its initial state. Built from a manifest entry or from a graph module."""

    def __init__(self, name: str, entry: dict, init_state: Dict[str, torch.Tensor]):
        self.name = name
        self.inputs = {e["name"]: (tuple(e["shape"]), torch_dtype(e["dtype"])) for e in entry["inputs"]}
        self.outputs = {e["name"]: (tuple(e["shape"]), torch_dtype(e["dtype"])) for e in entry["outputs"]}
        self.data_inputs: List[str] = list(entry["data_inputs"])
        self.data_outputs: List[str] = list(entry["data_outputs"])
        self.state: List[str] = list(entry["state"])
        self.slots: Dict[str, SlotRule] = {k: SlotRule.from_dict(v) for k, v in entry["slots"].items()}
        self.init_state = init_state
        self.entry = entry

    @classmethod
    def from_folder(cls, folder: Path, name: str, entry: dict) -> "GraphSpec":
        init = {}
        if entry.get("init_state"):
            from safetensors.torch import load_file
            init = load_file(str(Path(folder) / entry["init_state"]))
        return cls(name, entry, init)

    @classmethod
    def from_graph(cls, graph: StepGraph) -> "GraphSpec":
        args = graph.example_inputs()
        with torch.inference_mode():
            outs = graph(*args)
        return cls(graph.name, graph.describe(args, outs), graph.init_state())


class GraphRunner(abc.ABC):
    """State and buffers of one graph; subclasses implement ``_execute``."""

    def __init__(self, spec: GraphSpec, device: torch.device | str = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        alloc = lambda shape, dt: torch.zeros(shape, dtype=dt, device=self.device)  # noqa: E731
        self.state: Dict[str, torch.Tensor] = {k: alloc(*spec.inputs["state." + k]) for k in spec.state}
        self._next: Dict[str, torch.Tensor] = {k: alloc(*spec.outputs["next." + k])
                                               for k in spec.state if k not in spec.slots}
        self._slot_out: Dict[str, torch.Tensor] = {k: alloc(*spec.outputs["slot." + k]) for k in spec.slots}
        self.data_in: Dict[str, torch.Tensor] = {k: alloc(*spec.inputs[k]) for k in spec.data_inputs}
        self.data_out: Dict[str, torch.Tensor] = {k: alloc(*spec.outputs[k]) for k in spec.data_outputs}
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (in place: bound addresses stay valid)."""
        for k, t in self.state.items():
            init = self.spec.init_state.get(k)
            if init is None:
                t.zero_()
            else:
                t.copy_(init.to(t.dtype))

    def run(self, **data: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Execute once with the given data inputs (copied into the bound input buffers, cast to
        the graph's dtype); returns the data outputs (this runner's buffers)."""
        for k, v in data.items():
            self.data_in[k].copy_(v)
        self._execute()
        apply_slot_updates(self.state, self._slot_out, self.spec.slots, self.data_in)
        for name in self._next:
            self.state[name], self._next[name] = self._next[name], self.state[name]
        return self.data_out

    @abc.abstractmethod
    def _execute(self) -> None:
        """Run the graph once: read data_in and state, write data_out, _slot_out and _next."""


class TorchGraphRunner(GraphRunner):
    """The graph module itself, eager (same graph code as the export, no compiler between)."""

    def __init__(self, graph: StepGraph, device: torch.device | str = "cpu"):
        self.graph = graph.eval()
        super().__init__(GraphSpec.from_graph(graph), device)

    @torch.inference_mode()
    def _execute(self) -> None:
        spec = self.spec
        outs = self.graph(*[self.data_in[k] for k in spec.data_inputs],
                          *[self.state[k] for k in spec.state])
        n = len(spec.data_outputs)
        for k, t in zip(spec.data_outputs, outs[:n]):
            self.data_out[k].copy_(t)
        for k, t in zip(spec.state, outs[n:]):
            (self._slot_out[k] if k in spec.slots else self._next[k]).copy_(t)


class OrtGraphRunner(GraphRunner):
    """An ONNX graph in an onnxruntime session with IO binding.

    Every input and output is bound to a torch buffer by address (``bind_input`` /
    ``bind_output`` with ``buffer_ptr``); the state's ping-pong swap only changes which
    addresses are bound, so a step moves no state bytes beyond the graph's own reads and writes.
    ``providers``: onnxruntime provider names, e.g. ``["CUDAExecutionProvider"]`` (buffers then
    live on the GPU) or the default CPU provider.
    """

    def __init__(self, spec: GraphSpec, model_path: Path, providers: Optional[List[str]] = None,
                 threads: Optional[int] = None, device: torch.device | str = "cpu"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # the graphs run one after another with host work between them: threads that spin
        # waiting for the next graph steal the cores that host work and the other graphs need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path), opts,
                                            providers=providers or ["CPUExecutionProvider"])
        super().__init__(spec, device)
        names = {i.name for i in self.session.get_inputs()} | {o.name for o in self.session.get_outputs()}
        missing = (set(spec.inputs) | set(spec.outputs)) - names
        if missing:
            raise ValueError(f"{model_path}: graph lacks {sorted(missing)[:4]} (export and manifest disagree)")
        self._binding = self.session.io_binding()
        self._dev = "cuda" if self.device.type == "cuda" else "cpu"
        self._dev_id = self.device.index or 0

    def _bind(self, fn, name: str, t: torch.Tensor) -> None:
        import numpy as np

        np_dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
                    torch.int32: np.int32, torch.bool: np.bool_, torch.uint8: np.uint8}[t.dtype]
        fn(name, self._dev, self._dev_id, np_dtype, list(t.shape), t.data_ptr())

    def _execute(self) -> None:
        b, spec = self._binding, self.spec
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        for k in spec.data_inputs:
            self._bind(b.bind_input, k, self.data_in[k])
        for k in spec.state:
            self._bind(b.bind_input, "state." + k, self.state[k])
            if k in spec.slots:
                self._bind(b.bind_output, "slot." + k, self._slot_out[k])
            else:
                self._bind(b.bind_output, "next." + k, self._next[k])
        for k in spec.data_outputs:
            self._bind(b.bind_output, k, self.data_out[k])
        if self._dev == "cuda":
            b.synchronize_inputs()
        self.session.run_with_iobinding(b)
        if self._dev == "cuda":
            b.synchronize_outputs()
