"""Loading the speech model from the files the options name: Kyutai's folder layout (LM, Mimi,
tokenizer), the face model's pair of files, and random weights drawn from a seed for whatever
is not given. The torch runtime and the export step both load through here, so the same
options give them the same networks."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple, Union

from facebot.config.model import ModelOptions
from facebot.config.schema import ConfigError
from facebot.errors import FacebotError

if TYPE_CHECKING:  # the networks import torch: loaded on use, so that ModelLoadError is cheap to import
    import torch

    from .codec import MimiCodec, MimiConfig
    from .configs import LMConfig
    from .face_codec import FaceCodec
    from .face_transformer import FaceLM
    from .lm import LMModel
    from .sampling import SamplingConfig
    from .tokenizer import TextTokenizer

__all__ = ["KYUTAI_LM", "KYUTAI_MIMI", "KYUTAI_TOKENIZER", "FACE_LM_FILE", "FACE_CODEC_FILE", "ModelLoadError",
           "ModelFiles", "SpeechNetworks", "model_config", "model_files", "face_weight_files", "codec_config_for",
           "sampling_config", "load_networks", "load_tokenizer", "load_pretrained"]

# the file names of a Kyutai model folder (moshiko / moshika releases)
KYUTAI_LM = "model.safetensors"
KYUTAI_MIMI = "tokenizer-e351c8d8-checkpoint125.safetensors"
KYUTAI_TOKENIZER = "tokenizer_spm_32k_3.model"
# a trained face model's folder
FACE_LM_FILE = "face_lm.safetensors"
FACE_CODEC_FILE = "face_codec.safetensors"


class ModelLoadError(FacebotError):
    """Weights or config that cannot be used; ``str()`` is one line naming the file."""


@dataclass(frozen=True)
class ModelFiles:
    """The files a model is loaded from; None: random weights (lm, mimi), no tokenizer, no face
    model."""
    lm: Optional[Path]
    mimi: Optional[Path]
    tokenizer: Optional[Path]
    face: Optional[Tuple[Path, Path]]  # (face LM, face codec)

    @property
    def weights(self) -> dict:
        """The weight file of each part (lm, mimi, and face_lm, face_codec with a face model)."""
        face = dict(zip(("face_lm", "face_codec"), self.face)) if self.face else {}
        return {"lm": self.lm, "mimi": self.mimi, **face}


@dataclass
class SpeechNetworks:
    """The torch networks of a model: Mimi, the LM and, with a face model, its FaceLM and face codec."""
    codec: MimiCodec
    lm: LMModel
    face_lm: Optional[FaceLM] = None
    face_codec: Optional[FaceCodec] = None


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def model_config(options: ModelOptions) -> LMConfig:
    """The LM configuration the options name (tiny, small, moshi-7b or a Kyutai config.json)."""
    from .configs import load_config

    try:
        return load_config(options.config)
    except ConfigError:
        raise  # names the file and the key already
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"model config {options.config!r}: {err}") from None


def face_weight_files(spec: str) -> Tuple[Path, Path]:
    """(face_lm, face_codec) files from ``face_lm,face_codec`` paths or a folder holding both."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) == 1:
        if not Path(parts[0]).is_dir():
            raise ModelLoadError(f"{parts[0]}: no such face weights folder")
        files = (Path(parts[0]) / FACE_LM_FILE, Path(parts[0]) / FACE_CODEC_FILE)
    elif len(parts) == 2:
        files = (Path(parts[0]), Path(parts[1]))
    else:
        raise ModelLoadError(f"face weights {spec!r}: give a folder or 'face_lm.safetensors,face_codec.safetensors'")
    for f in files:
        if not f.is_file():
            raise ModelLoadError(f"{f}: no such face weights file")
    return files


def model_files(options: ModelOptions) -> ModelFiles:
    """Which file each part comes from: ``weights`` is a Kyutai folder or the LM's file (Mimi and
    the tokenizer are then looked for beside it unless given); a Mimi or tokenizer file that is
    not there means random Mimi weights or no tokenizer."""
    folder = Path(options.weights) if options.weights else None
    if folder is not None and not folder.exists():
        raise ModelLoadError(f"{folder}: no such weights file or folder")
    lm_file = (folder / KYUTAI_LM if folder.is_dir() else folder) if folder else None
    base = (folder if folder.is_dir() else folder.parent) if folder else None
    mimi = Path(options.mimi_weights) if options.mimi_weights else (base / KYUTAI_MIMI if base else None)
    tok = Path(options.tokenizer) if options.tokenizer else (base / KYUTAI_TOKENIZER if base else None)
    return ModelFiles(lm=lm_file, mimi=mimi if mimi is not None and mimi.is_file() else None,
                      tokenizer=tok if tok is not None and tok.is_file() else None,
                      face=face_weight_files(options.face_weights) if options.face_weights else None)


def codec_config_for(cfg: LMConfig) -> MimiConfig:
    """Kyutai's Mimi for every real configuration; the test model gets the tiny codec with as
    many codebook entries as its LM has audio tokens."""
    from .codec import codec_config

    codec_cfg = codec_config("mimi" if cfg.card == 2048 else "tiny")
    if codec_cfg.cardinality != cfg.card:
        codec_cfg = codec_cfg.replace(quantizer=dataclasses.replace(codec_cfg.quantizer, bins=cfg.card))
    return codec_cfg


def sampling_config(options: ModelOptions) -> SamplingConfig:
    """Greedy, or the options' temperatures and top-k widths."""
    from .sampling import SamplingConfig

    if options.greedy:
        return SamplingConfig.greedy()
    return SamplingConfig(temp=options.temperature, top_k=options.top_k, temp_text=options.temperature_text,
                          top_k_text=options.top_k_text)


def load_networks(options: ModelOptions, cfg: LMConfig, files: ModelFiles) -> SpeechNetworks:
    """The torch networks (inference mode) from ``files``; the parts without a file get random
    weights drawn from ``options.init_seed``, so the same seed gives the same networks."""
    import torch

    from .codec import MimiCodec
    from .face_codec import load_face_codec
    from .face_transformer import load_face_lm
    from .lm import build_lm, load_lm_checkpoint

    try:
        torch.manual_seed(options.init_seed)
        if files.mimi is not None:
            codec = MimiCodec.from_kyutai(files.mimi, codec_config_for(cfg))
        else:
            codec = MimiCodec(codec_config_for(cfg))
            # Fresh codebooks are zeros (as in Kyutai's code): every code would decode alike
            # and the random voice would not depend on the tokens. Random vectors instead.
            for module in codec.modules():
                if hasattr(module, "set_codebooks"):
                    module.set_codebooks(torch.randn_like(module.codebooks))
        lm = build_lm(cfg)
        if files.lm is not None:
            load_lm_checkpoint(lm, files.lm)
    except Exception as err:  # checkpoint errors already name the file and the keys
        raise ModelLoadError(_first_line(err)) from None
    networks = SpeechNetworks(codec.eval(), lm)
    if files.face is not None:
        try:
            networks.face_lm, networks.face_codec = load_face_lm(files.face[0]), load_face_codec(files.face[1])
        except Exception as err:
            raise ModelLoadError(_first_line(err)) from None
    return networks


def load_tokenizer(files: ModelFiles) -> TextTokenizer:
    """The inner-monologue tokenizer (an empty one without a file: tokens print as ids)."""
    from .tokenizer import TextTokenizer

    return TextTokenizer(files.tokenizer)


def load_pretrained(path: Union[str, Path], config: Union[str, Path, LMConfig, None] = None,
                    device=None, dtype: Optional[torch.dtype] = None):
    """A Kyutai model folder (``config.json`` optional -> moshi-7b; the weights file named by
    ``moshi_name``, default ``model.safetensors``; the text tokenizer ``tokenizer_name``, default
    ``tokenizer_spm_32k_3.model``) or a single .safetensors file with ``config``.

    Returns ``(model, tokenizer)``; ``tokenizer`` is a :class:`facebot.model.tokenizer.
    TextTokenizer` for the inner-monologue text, or None when the folder has no tokenizer file.
    The model is built on the meta device and filled from the file tensor by tensor (no random
    init of 7B parameters, no second copy).
    """
    from .configs import LMConfig, load_config
    from .lm import LMModel, load_lm_checkpoint
    from .tokenizer import TextTokenizer

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if config is None:
        config = folder / "config.json" if (folder / "config.json").is_file() else "moshi-7b"
    cfg = config if isinstance(config, LMConfig) else load_config(config)
    weights = path if path.is_file() else folder / cfg.meta.get("moshi_name", KYUTAI_LM)
    model = LMModel(cfg, device="meta", dtype=dtype)
    model.to_empty(device=device or "cpu")
    model.transformer.reset_buffers()
    model.depformer.reset_buffers()
    load_lm_checkpoint(model, weights)
    tok_path = folder / cfg.meta.get("tokenizer_name", KYUTAI_TOKENIZER)
    tokenizer = TextTokenizer(tok_path) if tok_path.is_file() else None
    return model.eval(), tokenizer
