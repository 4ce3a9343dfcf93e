"""`facebot eval`: how the robot converses, on recordings or on the generated scenario set."""
from __future__ import annotations

import dataclasses
import json
import sys

from facebot import __version__
from facebot.cli.errors import UserError
from facebot.cli.outputs import out_dir_in_place


def eval_command(args) -> int:
    if args.scenarios == bool(args.inputs):
        raise UserError("eval: give run folders / bags / WAVs, or --scenarios (not both)")
    rules = _rules(args)
    if args.scenarios:
        return _scenarios(args, rules)
    return _inputs(args, rules)


def _rules(args):
    from facebot.eval.turns import EventRules

    changes = {k: v for k, v in (("pause_max_s", args.pause_max), ("turn_min_s", args.turn_min)) if v is not None}
    try:
        return dataclasses.replace(EventRules(), **changes)
    except ValueError as err:
        raise UserError(f"eval: {err}") from None


def _inputs(args, rules) -> int:
    from facebot.eval.evaluate import evaluate
    from facebot.eval.inputs import load
    from facebot.eval.report import format_table

    convs = [load(p, args.user_topic, args.robot_topic, args.audio_format) for p in args.inputs]
    out = out_dir_in_place(args)
    out.mkdir(parents=True)
    results, names = [], set()
    for conv in convs:
        result = evaluate(conv, rules)
        name = conv.name
        while name in names:
            name += "_"
        names.add(name)
        result["name"] = name
        results.append(result)
        if not args.no_plot:
            from facebot.eval.plot import plot_timeline

            plot_timeline(out / f"timeline_{name}.png", conv, result)
    (out / "eval.json").write_text(json.dumps({"facebot": __version__, "inputs": results}, indent=1))
    print(format_table(results))
    for r in results:
        for note in r["notes"]:
            print(f"  {r['name']}: {note}")
    print(f"\neval.json{'' if args.no_plot else ' and timeline_*.png'} in {out}/")
    return 0


def _scenarios(args, rules) -> int:
    from functools import partial

    from facebot.assembly import build_head, build_pipeline
    from facebot.cli.settings import pipeline_config
    from facebot.eval.evaluate import evaluate
    from facebot.eval.scenarios import format_comparison, run_scenarios

    config = pipeline_config(args)
    cache = {}

    def build():
        if "pipeline" not in cache:  # the backend once (a model loads its weights once) ...
            cache["pipeline"] = build_pipeline(config, video=False)
            return cache["pipeline"].loop, cache["pipeline"].head
        return cache["pipeline"].loop, build_head(config)  # ... the head fresh for every session

    out = out_dir_in_place(args)
    print(f"facebot {__version__}: scenario set, {args.count} per situation, backend {config.backend}",
          file=sys.stderr)
    summary = run_scenarios(out, build, count=args.count, seed=config.seed, evaluate=partial(evaluate, rules=rules),
                            plot=not args.no_plot, log=lambda line: print(line, file=sys.stderr))
    print(format_comparison(config.backend, summary["situations"]))
    print(f"\neval.json and one run folder per instance in {out}/")
    return 0
