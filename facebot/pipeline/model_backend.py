"""The `model` speech backend: Mimi codec + Moshi-class language model, one 80 ms step.

Per step: encode the user's frame to Mimi codes, one LM step (temporal transformer, text
token, depth transformer over the robot's codebooks, acoustic delays), decode the robot's
codes to 1920 samples. The inner-monologue text token is published as text. Without weights
the networks are random: the loop runs and can be measured, but the voice is noise, and the
backend says so in every description of itself.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from facebot.audio.framing import FRAME_SAMPLES
from facebot.config.model import ModelOptions
from facebot.pipeline.backend import DuplexInput, DuplexOutput, SpeechBackend
from facebot.errors import FacebotError

KYUTAI_MIMI = "tokenizer-e351c8d8-checkpoint125.safetensors"
KYUTAI_TOKENIZER = "tokenizer_spm_32k_3.model"
SPEAKING_RMS = 0.01  # the robot counts as speaking when its frame is louder than this (-40 dBFS)


FACE_LM_FILE = "face_lm.safetensors"
FACE_CODEC_FILE = "face_codec.safetensors"


def _log(msg: str) -> None:
    print(f"facebot: {msg}", file=sys.stderr)


def codec_config_for(cfg):
    """Kyutai's Mimi for every real configuration; the test model gets the tiny codec with as
    many codebook entries as its LM has audio tokens."""
    from facebot.model.codec import codec_config

    codec_cfg = codec_config("mimi" if cfg.card == 2048 else "tiny")
    if codec_cfg.cardinality != cfg.card:
        codec_cfg = codec_cfg.replace(quantizer=dataclasses.replace(codec_cfg.quantizer, bins=cfg.card))
    return codec_cfg


def face_weight_files(spec: str) -> list:
    """[face_lm, face_codec] files from ``face_lm,face_codec`` paths or a folder holding both."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) == 1:
        if not Path(parts[0]).is_dir():
            raise ModelLoadError(f"{parts[0]}: no such face weights folder")
        files = [Path(parts[0]) / FACE_LM_FILE, Path(parts[0]) / FACE_CODEC_FILE]
    elif len(parts) == 2:
        files = [Path(p) for p in parts]
    else:
        raise ModelLoadError(f"face weights {spec!r}: give a folder or 'face_lm.safetensors,face_codec.safetensors'")
    for f in files:
        if not f.is_file():
            raise ModelLoadError(f"{f}: no such face weights file")
    return files


class ModelLoadError(FacebotError):
    """Weights or config that cannot be used; ``str()`` is one line naming the file."""


class ModelBackend(SpeechBackend):
    name = "model"

    def __init__(self, options: ModelOptions | None = None) -> None:
        import torch

        from facebot.model.codec import MimiCodec
        from facebot.model.configs import load_config
        from facebot.model.lm import build_lm, load_lm_checkpoint
        from facebot.model.sampling import SamplingConfig
        from facebot.model.tokenizer import TextTokenizer
        from facebot.runtime.lm_step import LMStep

        self.options = opts = options or ModelOptions()
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self._torch = torch
        try:
            cfg = load_config(opts.config)
        except (ValueError, OSError) as err:
            raise ModelLoadError(f"model config {opts.config!r}: {err}") from None
        folder = Path(opts.weights) if opts.weights else None
        if folder is not None and not folder.exists():
            raise ModelLoadError(f"{folder}: no such weights file or folder")
        lm_file = (folder / "model.safetensors" if folder.is_dir() else folder) if folder else None
        base = (folder if folder.is_dir() else folder.parent) if folder else None
        mimi_file = Path(opts.mimi_weights) if opts.mimi_weights else (base / KYUTAI_MIMI if base else None)
        tok_file = Path(opts.tokenizer) if opts.tokenizer else (base / KYUTAI_TOKENIZER if base else None)

        codec_cfg = codec_config_for(cfg)
        if mimi_file is not None and not mimi_file.is_file():
            mimi_file = None
        sampling = SamplingConfig.greedy() if opts.greedy else SamplingConfig(
            temp=opts.temperature, top_k=opts.top_k, temp_text=opts.temperature_text, top_k_text=opts.top_k_text)
        self.weight_files = {"lm": lm_file, "mimi": mimi_file,
                             **(dict(zip(("face_lm", "face_codec"), face_weight_files(opts.face_weights)))
                                if opts.face_weights else {})}
        if self._exported_folder():  # a robot's start: the graphs alone, no torch model
            self._start_from_folder(cfg, codec_cfg, sampling, tok_file)
            return
        try:
            torch.manual_seed(opts.init_seed)  # reproducible random weights
            if mimi_file is not None:
                self.codec = MimiCodec.from_kyutai(mimi_file, codec_cfg)
            else:
                self.codec = MimiCodec(codec_cfg)
                # Fresh codebooks are zeros (as in Kyutai's code): every code would decode alike
                # and the random voice would not depend on the tokens. Random vectors instead.
                for module in self.codec.modules():
                    if hasattr(module, "set_codebooks"):
                        module.set_codebooks(torch.randn_like(module.codebooks))
            self.lm = build_lm(cfg)
            if lm_file is not None:
                load_lm_checkpoint(self.lm, lm_file)
        except Exception as err:  # checkpoint errors already name the file and the keys
            raise ModelLoadError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        self.codec.eval()
        self.tokenizer = TextTokenizer(tok_file if tok_file is not None and tok_file.is_file() else None)
        self.stepper = LMStep(self.lm, sampling, weights=opts.weights_mode)
        # The sampling noise is an input of the step, so a compiled step stays pure and gives
        # the eager step's tokens for the same seed.
        self._lm_step = torch.compile(self.stepper.step, dynamic=False) if opts.compile else self.stepper.step
        self.weights_loaded = {"lm": lm_file is not None, "mimi": mimi_file is not None,
                               "tokenizer": self.tokenizer.vocab_size is not None}
        self.config_name = opts.config
        self.face_stepper = self._load_face(opts.face_weights) if opts.face_weights else None
        self.user_face = None
        if self.face_stepper is not None:  # the user's face stream (no-face token when no face)
            from facebot.runtime.user_face import UserFaceEncoder
            self.user_face = UserFaceEncoder(self.face_stepper.codec, self.face_stepper.initial)
        self.graph_step = self._load_graphs(sampling) if opts.runtime != "torch" else None
        self.reset(0)

    # ---- exported graphs (onnxruntime / TensorRT) ----------------------------------------------
    def _load_graphs(self, sampling):
        """The step as exported graphs: reuse the export folder if its manifest matches these
        weights, config, precision and sampling widths, else export now (about a minute at small)."""
        from facebot.export.model_export import ensure_export
        from facebot.export.onnx_export import ManifestError
        from facebot.runtime.graph_loop import GraphDuplexStep

        from facebot.export.deployment import recorded_sources, weight_sources

        opts = self.options
        fs = self.face_stepper
        try:
            out = Path(opts.export_dir) if opts.export_dir else None
            sources = weight_sources(self.weight_files, opts.init_seed, recorded_sources(out))
            folder, manifest = ensure_export(
                out, self.codec, self.lm, sampling, opts.precision, fs.face_lm if fs else None,
                fs.codec if fs else None, force=opts.force_engine_update, sources=sources, log=_log)
            runners = self._runners(folder, manifest)
        except (ManifestError, OSError, RuntimeError, ValueError) as err:
            raise ModelLoadError(f"runtime {opts.runtime}: {str(err).splitlines()[0]}") from None
        self.export_folder = folder
        return GraphDuplexStep(runners, self.lm.cfg, sampling, face_temp=fs.face_temp if fs else 0.0)

    def _runners(self, folder: Path, manifest: dict) -> dict:
        """One runner per graph of the folder: onnxruntime sessions or TensorRT engines (from
        the engine cache in ``folder/engines``, built there when missing)."""
        opts = self.options
        if opts.runtime == "onnxruntime":
            from facebot.runtime.model_runtime import load_ort_runners
            return load_ort_runners(folder, manifest, opts.device, opts.threads)
        from facebot.runtime.engine_cache import EngineCache
        from facebot.runtime.tensorrt_runtime import load_trt_runners, tensorrt_available
        ok, why = tensorrt_available()
        if not ok:
            raise ModelLoadError(f"runtime tensorrt: {why}")
        return load_trt_runners(folder, manifest, EngineCache(folder / "engines"), precision=opts.precision,
                                force_engine_update=opts.force_engine_update, log=_log)

    def _exported_folder(self) -> bool:
        """Whether to start from the export folder alone: a graph runtime, a folder given that
        holds a manifest, and no re-export asked for."""
        from facebot.export.onnx_export import MANIFEST

        opts = self.options
        return (opts.runtime != "torch" and bool(opts.export_dir) and not opts.force_engine_update
                and (Path(opts.export_dir) / MANIFEST).is_file())

    def _start_from_folder(self, cfg, codec_cfg, sampling, tok_file) -> None:
        """Load the manifest, the graphs and their initial state, after checking that the folder
        holds the model asked for (configs, precision, sampling widths, weight files by size +
        mtime + their hash recorded at export): no torch model is built."""
        from facebot.export.deployment import open_export
        from facebot.export.model_export import requested_identity
        from facebot.export.onnx_export import ManifestError
        from facebot.model.tokenizer import TextTokenizer
        from facebot.runtime.graph_loop import GraphDuplexStep

        opts = self.options
        folder = Path(opts.export_dir)
        face = opts.face_weights is not None
        expect = requested_identity(cfg.to_dict(), dataclasses.asdict(codec_cfg), sampling, opts.precision, face)
        try:
            manifest = open_export(folder, expect, self.weight_files, opts.init_seed,
                                   verify=opts.verify_weights, log=_log)
            runners = self._runners(folder, manifest)
        except (ManifestError, OSError, RuntimeError, ValueError) as err:
            raise ModelLoadError(f"runtime {opts.runtime}: {str(err).splitlines()[0]}") from None
        self.codec = self.lm = self.stepper = self.face_stepper = None
        self._lm_step = None
        self.tokenizer = TextTokenizer(tok_file if tok_file is not None and tok_file.is_file() else None)
        self.weights_loaded = {"lm": self.weight_files["lm"] is not None,
                               "mimi": self.weight_files["mimi"] is not None,
                               "tokenizer": self.tokenizer.vocab_size is not None}
        self.config_name = opts.config
        self.export_folder = folder
        self.graph_step = GraphDuplexStep(runners, cfg, sampling)
        self.user_face = None
        if face:  # the user's face stream needs the face codec's encoder alone (small, torch)
            from facebot.model.face_codec import load_face_codec
            from facebot.runtime.user_face import UserFaceEncoder
            try:
                codec = load_face_codec(face_weight_files(opts.face_weights)[1])
                # the no-face token is the FaceLM's initial token, K = the codebook size
                self.user_face = UserFaceEncoder(codec, codec.cfg.codebook_size)
            except Exception as err:
                raise ModelLoadError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        self.reset(0)

    # ---- Moshi-Face (only with face_weights) ---------------------------------------------------
    FACE_LM_FILE = FACE_LM_FILE
    FACE_CODEC_FILE = FACE_CODEC_FILE

    def _load_face(self, spec: str):
        """FaceLM + face codec from ``face_lm,face_codec`` paths or a folder holding both."""
        from facebot.model.face_codec import load_face_codec
        from facebot.model.face_transformer import load_face_lm
        from facebot.runtime.face_lm_step import FaceLMStep

        files = face_weight_files(spec)
        try:
            stepper = FaceLMStep(self.stepper, load_face_lm(files[0]), load_face_codec(files[1]))
            stepper.init_state(1)  # a non-causal face codec cannot stream: refuse it now
        except Exception as err:
            raise ModelLoadError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        return stepper

    def _face_frames(self, face) -> list:
        """FLAME frames from the face decoder's core output ([1, 2, 56] tensor or [2, 56] array)."""
        from facebot.face.flame import FlameFrame, FrameSource

        core = face[0].float().numpy() if hasattr(face, "numpy") else np.asarray(face, np.float32)
        return [FlameFrame.from_core(core[j], source=FrameSource.MODEL) for j in range(core.shape[0])]

    def update_options(self, temperature: float | None = None, top_k: int | None = None) -> None:
        """Live sampling changes (the ROS node's parameter callback calls this)."""
        from facebot.model.sampling import SamplingConfig

        sp = self.graph_step.sampling if self.stepper is None else self.stepper.sampling
        if self.graph_step is not None and top_k is not None and int(top_k) != sp.top_k:
            raise ValueError(f"top_k is fixed in the exported graphs ({sp.top_k}); re-export to change it")
        if sp.use_sampling:
            new = SamplingConfig(
                temp=sp.temp if temperature is None else float(temperature),
                top_k=sp.top_k if top_k is None else int(top_k),
                temp_text=sp.temp_text, top_k_text=sp.top_k_text, seed=sp.seed)
            if self.stepper is not None:
                self.stepper.sampling = new
            if self.graph_step is not None:
                self.graph_step.sampling = new

    def describe(self) -> str:
        if not self.weights_loaded["lm"]:
            what = "RANDOM WEIGHTS: untrained, the voice is noise (give --weights)"
        else:
            what = f"weights {self.options.weights}" + ("" if self.weights_loaded["mimi"] else ", RANDOM Mimi codec")
        has_face = self.graph_step.has_face if self.graph_step is not None else self.face_stepper is not None
        face = "model face" if has_face else "procedural face"
        rt = "" if self.graph_step is None else f"; {self.options.runtime} {self.options.precision}"
        if self.codec is None:
            rt += f" from {self.export_folder}"
        return f"model {self.config_name} ({what}; {face}{rt})"

    def reset(self, seed: int = 0) -> None:
        from facebot.model.sampling import make_generator

        self.steps = 0
        if self.codec is None:  # started from an export folder: the graphs hold all the state
            self.graph_step.reset(seed)
            return
        self.enc_state = self.codec.init_encoder_state(1)
        self.dec_state = self.codec.init_decoder_state(1)
        self.lm_state = (self.face_stepper or self.stepper).init_state(1)
        self.generator = make_generator(seed)
        self.steps = 0
        if self.user_face is not None:
            self.user_face.reset()
        if self.graph_step is not None:
            self.graph_step.reset(seed)

    def step(self, inp: DuplexInput) -> DuplexOutput:
        if self.graph_step is not None:
            return self._graph_step(inp)
        torch = self._torch
        with torch.inference_mode():
            pcm = torch.from_numpy(np.ascontiguousarray(inp.user_audio, np.float32)).view(1, 1, FRAME_SAMPLES)
            codes, self.enc_state = self.codec.encode_step(pcm, self.enc_state)
            flame = None
            if self.face_stepper is not None:
                noise = self.face_stepper.draw_noise(1, self.generator)
                tokens, valid, _, face, self.lm_state = self.face_stepper.step(
                    codes[:, :, 0], self.user_face.step(inp.user_flame), self.lm_state, noise)
                flame = self._face_frames(face)
            else:
                noise = self.stepper.draw_noise(1, self.generator)
                tokens, valid, self.lm_state = self._lm_step(codes[:, :, 0], self.lm_state, None, noise)
            self.steps += 1
            if not bool(valid):
                return DuplexOutput(audio=np.zeros(FRAME_SAMPLES, np.float32), flame=flame)
            audio, self.dec_state = self.codec.decode_step(tokens[:, 1:].unsqueeze(-1), self.dec_state)
        audio = audio.reshape(-1).numpy()
        speaking = float(np.sqrt(np.mean(np.square(audio)))) > SPEAKING_RMS
        return DuplexOutput(audio=audio, speaking=speaking, text=self.tokenizer.piece(int(tokens[0, 0])),
                            flame=flame)

    def _graph_step(self, inp: DuplexInput) -> DuplexOutput:
        user = self.user_face.step(inp.user_flame) if self.user_face is not None else None
        res = self.graph_step.step(np.ascontiguousarray(inp.user_audio, np.float32), user)
        self.steps += 1
        flame = self._face_frames(res.face) if res.face is not None else None
        if not res.valid:
            return DuplexOutput(audio=np.zeros(FRAME_SAMPLES, np.float32), flame=flame)
        speaking = float(np.sqrt(np.mean(np.square(res.audio)))) > SPEAKING_RMS
        return DuplexOutput(audio=res.audio, speaking=speaking, text=self.tokenizer.piece(int(res.tokens[0])),
                            flame=flame)
