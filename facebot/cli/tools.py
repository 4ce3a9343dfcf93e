"""The tool commands: corpus, train, export, sample, flame-convert and calibrate."""
from __future__ import annotations

import json
import time
from pathlib import Path

from facebot.cli.errors import UserError


def corpus_command(args) -> int:
    from facebot.train.corpus import make_corpus

    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out}: already exists")
    if args.seconds < 5:
        raise UserError("corpus: need dialogues of at least 5 s")
    manifest = make_corpus(out, args.dialogues, seconds_per_dialogue=args.seconds, seed=args.seed)
    splits = manifest.get("splits", {})
    print(f"synthetic corpus: {out} ({args.dialogues} dialogues x {args.seconds:.0f} s; "
          + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + ")")
    return 0


def train_command(args) -> int:
    if args.stage == "face":
        from facebot.train.system_table import format_table, run

        result = run(args.dialogues, args.seconds, args.steps, None, args.codec_steps, seed=args.seed,
                     out_dir=args.out)
        Path(args.out, "table.json").write_text(json.dumps(result, indent=1))
        print(format_table(result))
        return 0
    from facebot.model.face_codec import FaceCodecConfig
    from facebot.train.codec_train import evaluate_codec, train_codec
    from facebot.train.datasets import DatasetError, DyadicDataset

    try:
        train_set = [item["face_self"] for item in DyadicDataset(args.data, split="train")]
        try:
            val_set = [item["face_self"] for item in DyadicDataset(args.data, split="val")]
        except DatasetError:
            val_set = []
    except OSError as err:
        raise UserError(str(err).splitlines()[0]) from None
    if not train_set:
        raise UserError(f"{args.data}: no training clips")
    cfg = FaceCodecConfig(codebook_size=args.codebook_size, codebook_dim=args.codebook_dim,
                          causal=not args.non_causal)
    model, _ = train_codec(train_set, cfg, steps=args.steps, batch=args.batch, seed=args.seed,
                           out_dir=args.out, resume=args.resume)
    report = evaluate_codec(model, val_set or train_set)
    print(f"{'val' if val_set else 'train'}: mean L2 {report['mean_l2']:.4f} (mean-face {report['baseline_mean_l2']:.4f}), "
          f"lip {report['lip_error']:.4f}, normalised perplexity {report['perplexity']:.2f}")
    print(f"checkpoints in {args.out}/ (face_codec.safetensors, codec_last.safetensors, metrics.jsonl)")
    return 0


def export_command(args) -> int:
    """`facebot export`: the assembly's export step (export/prepare.py) into a folder that
    `run --engine DIR` and the dialogue's engine_path start from alone; --check streams frames
    through the result and the torch model side by side."""
    import dataclasses

    from facebot.cli.settings import pipeline_config
    from facebot.export.onnx_export import read_manifest
    from facebot.export.prepare import prepare_export

    config = pipeline_config(args)
    model = config.model
    runtime = model.runtime if model.runtime != "torch" else "onnxruntime"  # graphs are for a graph runtime
    out = args.out or args.export_dir
    t0 = time.perf_counter()
    options = prepare_export(dataclasses.replace(
        model, runtime=runtime, export_dir=out, weights_mode="none", compile=False,
        force_engine_update=args.force or model.force_engine_update))
    folder = Path(options.export_dir)
    manifest = read_manifest(folder)
    print(f"{folder}: {len(manifest['graphs'])} graphs ({', '.join(manifest['graphs'])}), "
          f"{manifest['precision']}, opset {manifest['opset']}, weights {manifest['weights_hash'][:12]} "
          f"(model {model.config}), {time.perf_counter() - t0:.0f} s")
    if args.check:
        from facebot.export.verify import compare_runtimes
        from facebot.pipeline.model_backend import ModelBackend

        reference = ModelBackend(dataclasses.replace(options, runtime="torch", export_dir=None, precision="fp32",
                                                     verify_weights=False, force_engine_update=False))
        report = compare_runtimes(folder, manifest, reference, frames=args.check, seed=config.seed)
        for line in report["lines"]:
            print(line)
    return 0


def sample_command(args) -> int:
    from facebot.pipeline.sample import default_sample_path, make_sample_conversation

    path = Path(args.out) if args.out else default_sample_path()
    turns = make_sample_conversation(path)
    print(f"sample conversation: {path} ({len(turns)} user turns, layout in {path.with_suffix('.json').name})")
    return 0


def flame_convert_command(args) -> int:
    from facebot.face.flame_convert import convert_flame_pickle

    info = convert_flame_pickle(args.input, args.output, i_trust_this_file=args.i_trust_this_file,
                                overwrite=args.force)
    print(f"wrote {info['path']}: {info['vertices']} vertices, {info['faces']} triangles, "
          f"{info['shape_components']} shape + {info['expression_components']} expression components")
    return 0


def calibrate_command(args) -> int:
    from facebot.config.files import CONFIG_DIR
    from facebot.robot.calibrate import run

    config = Path(args.config) if args.config else CONFIG_DIR / "head_reference.yaml"
    print(run(args.samples, config, args.out, args.fields, args.force,
              args.weight_bound, args.ridge, args.min_weight))
    return 0
