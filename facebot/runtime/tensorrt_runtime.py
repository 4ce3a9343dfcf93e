"""The step graphs as TensorRT engines (TensorRT 10 Python API), built once and cached.

``load_trt_runners`` turns an export folder (:mod:`facebot.export.onnx_export`) into one
:class:`TrtGraphRunner` per graph: each graph's engine comes from the :class:`EngineCache` when
its key matches (same ONNX file, weights, config, precision, TensorRT version, GPU and builder
options), else it is built from the ONNX file and stored. A runner keeps the state in persistent
CUDA buffers (:class:`GraphRunner`) and binds them by address every step.

Precision: an fp16 export is built as a strongly typed network (the types are the ONNX file's);
an fp32 export is built as fp32 (TF32 off, so it matches the torch graphs), or as fp16 through the
builder's FP16 flag where this TensorRT still has it (removed in TensorRT 11: export in fp16).
int8 / fp8 / int4 / fp4 need a graph already quantized with Q/DQ nodes (NVIDIA ModelOpt) and are
built strongly typed.

TensorRT is imported inside the functions only: the package imports without it.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .engine_cache import EngineCache, EngineKey, config_hash, file_hash, write_atomic
from .graph_runner import GraphRunner, GraphSpec

__all__ = ["EngineBuildError", "tensorrt_available", "gpu_identity", "trt_version",
           "network_mode", "has_qdq_nodes", "build_engine", "check_engine_io", "TrtGraphRunner",
           "engine_key_for", "builder_options", "load_trt_runners", "QUANTIZED", "RECIPE"]

QUANTIZED = ("int8", "fp8", "int4", "fp4")
# bumped when build_engine changes how engines are made: old cached engines are then rebuilt
RECIPE = 1
DEFAULT_WORKSPACE = 4 << 30


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build a graph; the message carries TensorRT's own errors."""


def _trt():
    import tensorrt
    return tensorrt


def tensorrt_available() -> Tuple[bool, str]:
    """(usable, why): TensorRT importable and a CUDA device visible to torch."""
    missing = []
    try:
        trt = _trt()
    except Exception as err:  # ImportError, or OSError when its libraries do not load
        missing.append(f"tensorrt is not importable ({type(err).__name__}: {err})")
    if not torch.cuda.is_available():
        missing.append("no CUDA device (torch.cuda.is_available() is False)")
    if missing:
        return False, "; ".join(missing)
    return True, f"TensorRT {trt.__version__} on {gpu_identity()}"


def gpu_identity(device: Optional[int] = None) -> str:
    """GPU name and compute capability: engines and timing caches are tuned for exactly these."""
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    return f"{name} sm_{major}{minor}"


def trt_version() -> str:
    return str(_trt().__version__)


def _make_logger(trt, log: Callable[[str], None]):
    """A TensorRT logger that forwards warnings and errors to ``log`` and keeps the errors, so a
    failed build can say why."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                log(f"TensorRT: {msg}")

    return Logger()


# ---- building -----------------------------------------------------------------------------------
def network_mode(precision: str, onnx_precision: str) -> Tuple[bool, bool]:
    """(strongly_typed, fp16_flag) for building ``precision`` from an export in ``onnx_precision``
    ("fp32" or "fp16"; an already quantized graph counts as either)."""
    if precision in QUANTIZED:
        return True, False
    if precision == "fp32":
        if onnx_precision != "fp32":
            raise ValueError(f"an fp32 engine needs an fp32 export, this one is {onnx_precision}")
        return True, False
    if precision == "fp16":
        return (True, False) if onnx_precision == "fp16" else (False, True)
    raise ValueError(f"precision must be fp32, fp16 or one of {QUANTIZED}, got {precision!r}")


def has_qdq_nodes(onnx_path: os.PathLike) -> bool:
    """Whether the graph holds quantize/dequantize nodes (ModelOpt's explicit quantization),
    read without loading the weights."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    return any("QuantizeLinear" in op for op in ops)  # also DequantizeLinear, TRT_FP8QuantizeLinear


def _parse(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file reads the external data file that lies beside the graph
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path.name}: TensorRT's ONNX parser failed:\n  "
                               + "\n  ".join(errors or logger.errors or ["(no error reported)"]))
    return network, parser


def _fixed_profile(trt, builder, network, input_shapes: Optional[Mapping[str, Sequence[int]]]):
    """An optimization profile pinning every dynamic input to its export shape, or None when the
    network's inputs are all static (our exports are)."""
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(d < 0 for d in network.get_input(i).shape)]
    if not dynamic:
        return None
    profile = builder.create_optimization_profile()
    for t in dynamic:
        shape = (input_shapes or {}).get(t.name)
        if shape is None:
            raise EngineBuildError(f"input {t.name} has dynamic shape {tuple(t.shape)} and no fixed shape given")
        profile.set_shape(t.name, tuple(shape), tuple(shape), tuple(shape))
    return profile


def _timing_cache(config, path: Optional[Path], log):
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: another GPU's is useless
        log(f"timing cache {path} does not match this TensorRT/GPU; starting an empty one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: os.PathLike, precision: str, workspace_bytes: int = DEFAULT_WORKSPACE,
                 timing_cache_path: Optional[os.PathLike] = None, opt_level: int = 3,
                 onnx_precision: str = "fp32",
                 input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 log: Callable[[str], None] = print) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine in ``precision``; the timing cache file
    (if given) is read before and written after the build. Raises :class:`EngineBuildError`."""
    trt = _trt()
    onnx_path = Path(onnx_path)
    strongly_typed, fp16_flag = network_mode(precision, onnx_precision)
    if precision in QUANTIZED and not has_qdq_nodes(onnx_path):
        raise EngineBuildError(f"{onnx_path.name}: {precision} needs a graph quantized with Q/DQ nodes "
                               "(NVIDIA ModelOpt); this one has none")
    logger = _make_logger(trt, log)
    builder = trt.Builder(logger)
    # the parser holds the weights the network points to: it lives until the build is done
    network, _parser = _parse(trt, builder, logger, onnx_path, strongly_typed)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.builder_optimization_level = int(opt_level)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: the reference-parity engine
    if fp16_flag:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineBuildError(f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed "
                                   "only): export the graphs with precision fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = _fixed_profile(trt, builder, network, input_shapes)
    if profile is not None:
        config.add_optimization_profile(profile)
    timing_path = Path(timing_cache_path) if timing_cache_path is not None else None
    timing = _timing_cache(config, timing_path, log)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path.name}: TensorRT build failed ({precision}):\n  "
                               + "\n  ".join(logger.errors or ["(no error reported)"]))
    if timing_path is not None:
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(timing_path, memoryview(timing.serialize()).cast("B"))
    return bytes(memoryview(serialized).cast("B"))


# ---- running ------------------------------------------------------------------------------------
def _torch_dtypes(trt) -> dict:
    pairs = [("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16),
             ("INT32", torch.int32), ("INT64", torch.int64), ("INT8", torch.int8),
             ("UINT8", torch.uint8), ("BOOL", torch.bool)]
    return {getattr(trt.DataType, n): t for n, t in pairs if hasattr(trt.DataType, n)}


def engine_io(trt, engine) -> Dict[str, Tuple[str, tuple, object]]:
    """name -> (mode 'input'/'output', shape, torch dtype or TensorRT's name of it)."""
    dtypes = _torch_dtypes(trt)
    io = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        dt = engine.get_tensor_dtype(name)
        io[name] = (mode, tuple(engine.get_tensor_shape(name)), dtypes.get(dt, str(dt)))
    return io


def check_engine_io(spec: GraphSpec, io: Mapping[str, Tuple[str, tuple, object]]) -> List[str]:
    """Raise ValueError naming every difference between the engine's I/O and the graph's spec;
    returns the spec inputs the engine dropped (TensorRT removes inputs nothing reads)."""
    problems, dropped = [], []
    for mode, table in (("input", spec.inputs), ("output", spec.outputs)):
        for name, (shape, dtype) in table.items():
            if name not in io:
                (dropped.append(name) if mode == "input" else problems.append(f"output {name} missing"))
                continue
            emode, eshape, edtype = io[name]
            if emode != mode:
                problems.append(f"{name} is an engine {emode}, the graph's {mode}")
            if tuple(eshape) != tuple(shape):
                problems.append(f"{name} shape {tuple(eshape)} != {tuple(shape)}")
            if edtype != dtype:
                hint = " (TensorRT < 10 turns int64 into int32)" if dtype == torch.int64 else ""
                problems.append(f"{name} dtype {edtype} != {dtype}{hint}")
    extra = sorted(set(io) - set(spec.inputs) - set(spec.outputs))
    problems += [f"engine tensor {n} is not in the graph's spec" for n in extra]
    if problems:
        raise ValueError(f"{spec.name}: engine and export disagree: " + "; ".join(problems))
    return dropped


class TrtGraphRunner(GraphRunner):
    """A graph as a TensorRT engine, with state and I/O in persistent CUDA buffers.

    Every step binds every tensor by address (the state ping-pong swaps buffers between steps)
    and enqueues the engine on torch's current stream without waiting: the caller's first read
    to the host synchronizes.
    """

    def __init__(self, spec: GraphSpec, engine_bytes, device: torch.device | str = "cuda",
                 log: Callable[[str], None] = print):
        trt = _trt()
        self._logger = _make_logger(trt, log)  # must outlive the runtime and the engine
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineBuildError(f"{spec.name}: TensorRT could not deserialize the engine: "
                                   + "; ".join(self._logger.errors or ["(no error reported)"]))
        dropped = set(check_engine_io(spec, engine_io(trt, self.engine)))
        if torch.device(device).type != "cuda":
            raise ValueError(f"{spec.name}: a TensorRT runner needs a CUDA device, got {device}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineBuildError(f"{spec.name}: could not create an execution context")
        super().__init__(spec, device)
        self._bindings = self._binding_table(dropped)

    def _binding_table(self, dropped) -> list:
        """(tensor name, buffer table, key) of every engine tensor: the buffer is looked up in
        its table at each step because the state buffers swap."""
        s = self.spec
        table = [(k, self.data_in, k) for k in s.data_inputs if k not in dropped]
        table += [("state." + k, self.state, k) for k in s.state if "state." + k not in dropped]
        table += [("slot." + k, self._slot_out, k) for k in s.state if k in s.slots]
        table += [("next." + k, self._next, k) for k in s.state if k not in s.slots]
        return table + [(k, self.data_out, k) for k in s.data_outputs]

    def _execute(self) -> None:
        ctx = self.context
        for name, table, key in self._bindings:
            if not ctx.set_tensor_address(name, table[key].data_ptr()):
                raise RuntimeError(f"{self.spec.name}: TensorRT rejected the address of {name}")
        if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError(f"{self.spec.name}: TensorRT execution failed: "
                               + "; ".join(self._logger.errors[-3:] or ["(no error reported)"]))


# ---- from an export folder ----------------------------------------------------------------------
def builder_options(workspace_bytes: int = DEFAULT_WORKSPACE, opt_level: int = 3) -> dict:
    """The builder settings that go into the engine key."""
    return {"workspace_bytes": int(workspace_bytes), "opt_level": int(opt_level), "recipe": RECIPE}


def engine_key_for(folder: os.PathLike, name: str, entry: Mapping, manifest: Mapping,
                   precision: Optional[str], trt_version: str, gpu: str,
                   options: Mapping) -> EngineKey:
    """The cache key of one graph of an export (``precision`` None: the export's own)."""
    folder = Path(folder)
    files = [folder / entry["file"]] + ([folder / entry["external_data"]] if entry.get("external_data") else [])
    return EngineKey(graph=name, onnx_hash=file_hash(*files),
                     weights_hash=str(manifest.get("weights_hash") or ""),
                     config_hash=config_hash(manifest.get("config")),
                     precision=precision or manifest["precision"], trt_version=trt_version, gpu=gpu,
                     options=dict(options))


def load_trt_runners(export_folder: os.PathLike, manifest: Mapping, cache: EngineCache,
                     precision: Optional[str] = None, force_engine_update: bool = False,
                     workspace_bytes: int = DEFAULT_WORKSPACE, opt_level: int = 3,
                     device: torch.device | str = "cuda",
                     log: Callable[[str], None] = print) -> Dict[str, TrtGraphRunner]:
    """One runner per graph of the export, each engine from ``cache`` or built into it."""
    ok, why = tensorrt_available()
    if not ok:
        raise RuntimeError(f"TensorRT runtime unavailable: {why}")
    folder = Path(export_folder)
    version, gpu = trt_version(), gpu_identity(torch.device(device).index)
    options = builder_options(workspace_bytes, opt_level)
    timing = cache.timing_cache_path(version, gpu)
    runners: Dict[str, TrtGraphRunner] = {}
    for name, entry in manifest["graphs"].items():
        key = engine_key_for(folder, name, entry, manifest, precision, version, gpu, options)
        build = functools.partial(build_engine, folder / entry["file"], key.precision, workspace_bytes,
                                  timing, opt_level, manifest["precision"],
                                  {e["name"]: e["shape"] for e in entry["inputs"]}, log)
        engine = cache.get_or_build(key, build, force_engine_update, log)
        runners[name] = TrtGraphRunner(GraphSpec.from_folder(folder, name, entry), engine, device, log)
    return runners
