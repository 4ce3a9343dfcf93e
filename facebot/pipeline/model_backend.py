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
from facebot.model.loading import (ModelLoadError, codec_config_for, load_networks,
                                   load_tokenizer, model_config, model_files, sampling_config)
from facebot.pipeline.backend import DuplexInput, DuplexOutput, SpeechBackend

SPEAKING_RMS = 0.01  # the robot counts as speaking when its frame is louder than this (-40 dBFS)


def _log(msg: str) -> None:
    print(f"facebot: {msg}", file=sys.stderr)


class ModelBackend(SpeechBackend):
    """The torch runtime builds the networks from the weight files; a graph runtime loads an
    export folder alone (:func:`facebot.export.prepare.prepare_export` makes one first)."""
    name = "model"

    def __init__(self, options: ModelOptions | None = None) -> None:
        import torch

        from facebot.runtime.lm_step import LMStep

        self.options = opts = options or ModelOptions()
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self._torch = torch
        cfg = model_config(opts)
        files = model_files(opts)
        sampling = sampling_config(opts)
        self.weight_files = files.weights
        if opts.runtime != "torch":  # a robot's start: the graphs alone, no torch model
            self._start_from_folder(cfg, sampling, files)
            return
        nets = load_networks(opts, cfg, files)
        self.codec, self.lm = nets.codec, nets.lm
        self.tokenizer = load_tokenizer(files)
        self.stepper = LMStep(self.lm, sampling, weights=opts.weights_mode)
        # The sampling noise is an input of the step, so a compiled step stays pure and gives
        # the eager step's tokens for the same seed.
        self._lm_step = torch.compile(self.stepper.step, dynamic=False) if opts.compile else self.stepper.step
        self.weights_loaded = {"lm": files.lm is not None, "mimi": files.mimi is not None,
                               "tokenizer": self.tokenizer.vocab_size is not None}
        self.config_name = opts.config
        self.face_stepper = self._face_step(nets) if nets.face_lm is not None else None
        self.user_face = None
        if self.face_stepper is not None:  # the user's face stream (no-face token when no face)
            from facebot.runtime.user_face import UserFaceEncoder
            self.user_face = UserFaceEncoder(self.face_stepper.codec, self.face_stepper.initial)
        self.graph_step = None
        self.reset(0)

    # ---- exported graphs (onnxruntime / TensorRT) ----------------------------------------------
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

    def _start_from_folder(self, cfg, sampling, files) -> None:
        """Load the manifest, the graphs and their initial state, after checking that the folder
        holds the model asked for (configs, precision, sampling widths, weight files by size +
        mtime + their hash recorded at export): no torch model is built."""
        from facebot.export.deployment import open_export
        from facebot.export.model_export import requested_identity
        from facebot.export.onnx_export import ManifestError
        from facebot.runtime.graph_loop import GraphDuplexStep

        opts = self.options
        if not opts.export_dir:
            raise ModelLoadError(f"runtime {opts.runtime}: no export folder given "
                                 "(the export step, facebot.export.prepare.prepare_export, names one)")
        folder = Path(opts.export_dir)
        face = opts.face_weights is not None
        expect = requested_identity(cfg.to_dict(), dataclasses.asdict(codec_config_for(cfg)), sampling,
                                    opts.precision, face)
        try:
            manifest = open_export(folder, expect, self.weight_files, opts.init_seed,
                                   verify=opts.verify_weights, log=_log)
            runners = self._runners(folder, manifest)
        except (ManifestError, OSError, RuntimeError, ValueError) as err:
            raise ModelLoadError(f"runtime {opts.runtime}: {str(err).splitlines()[0]}") from None
        self.codec = self.lm = self.stepper = self.face_stepper = None
        self._lm_step = None
        self.tokenizer = load_tokenizer(files)
        self.weights_loaded = {"lm": files.lm is not None, "mimi": files.mimi is not None,
                               "tokenizer": self.tokenizer.vocab_size is not None}
        self.config_name = opts.config
        self.export_folder = folder
        self.graph_step = GraphDuplexStep(runners, cfg, sampling)
        self.user_face = None
        if face:  # the user's face stream needs the face codec's encoder alone (small, torch)
            from facebot.model.face_codec import load_face_codec
            from facebot.runtime.user_face import UserFaceEncoder
            try:
                codec = load_face_codec(files.face[1])
                # the no-face token is the FaceLM's initial token, K = the codebook size
                self.user_face = UserFaceEncoder(codec, codec.cfg.codebook_size)
            except Exception as err:
                raise ModelLoadError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        self.reset(0)

    # ---- Moshi-Face (only with face_weights) ---------------------------------------------------
    def _face_step(self, nets):
        """The face model's step over the LM's (a face codec that cannot stream is refused now)."""
        from facebot.runtime.face_lm_step import FaceLMStep

        try:
            stepper = FaceLMStep(self.stepper, nets.face_lm, nets.face_codec)
            stepper.init_state(1)
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
