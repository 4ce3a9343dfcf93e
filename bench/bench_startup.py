"""Start-up of the model backend on exported graphs: through the export step without a folder
(build the torch model, hash its parameters, find the matching export, load the graphs) against
a start from the export folder alone (manifest + graphs + initial state, weight files checked by size + mtime + the
hash recorded at export), side by side in one run.

Each start is a fresh process (`python -c`), alternating between the two paths; it reports the
time from the process's first line to its first 80 ms frame (imports included) and its peak RSS
(VmHWM). The weights are random but read from files (an LM .safetensors written here), as a
robot's would be. The 7B lines are arithmetic, not measurements: the manifest's byte counts
per parameter at small, scaled to moshi-7b's parameter count, with the rates measured here.

    python bench/bench_startup.py --config small --precision int4 --starts 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import time; t0 = time.perf_counter()
import json, sys
import numpy as np
from facebot.export.prepare import prepare_export
from facebot.pipeline.model_backend import ModelBackend
from facebot.config.model import ModelOptions
from facebot.pipeline.backend import DuplexInput
opts = json.loads(sys.argv[1])
t_import = time.perf_counter()
be = ModelBackend(prepare_export(ModelOptions(**opts)))
t_load = time.perf_counter()
be.step(DuplexInput(index=0, user_audio=np.zeros(1920, np.float32), capture_stamp_ns=0))
t_frame = time.perf_counter()
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "first_frame_s": t_frame - t0,
                  "peak_rss_mb": int(hwm) / 1024}))
"""


def start(opts: dict, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(opts)], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        raise SystemExit(f"start failed: {why}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--precision", default="int4", choices=["fp32", "fp16", "int8", "int4"])
    ap.add_argument("--starts", type=int, default=3, help="starts per path (alternating)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default=None, help="weights, cache and export here (default: a temp dir)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from safetensors.torch import save_file

    from facebot.export.onnx_export import weights_hash
    from facebot.export.prepare import prepare_export
    from facebot.export.traffic import frame_traffic
    from facebot.model.loading import load_networks, model_config, model_files
    from facebot.pipeline.model_backend import ModelBackend
    from facebot.config.model import ModelOptions

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="facebot-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FACEBOT_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    os.environ["FACEBOT_CACHE"] = env["FACEBOT_CACHE"]
    torch.set_num_threads(args.threads)
    lm_file = work / "model.safetensors"
    if not lm_file.is_file():
        src = ModelBackend(ModelOptions(config=args.config, init_seed=1))
        save_file({k: v.contiguous() for k, v in src.lm.state_dict().items()}, str(lm_file))
        del src
    common = {"config": args.config, "weights": str(lm_file), "precision": args.precision,
              "runtime": "onnxruntime", "threads": args.threads}
    # first use: the export step exports into the cache (not timed); its folder is the one started from
    t0 = time.perf_counter()
    folder = Path(prepare_export(ModelOptions(**common)).export_dir)
    print(f"export {folder}: {time.perf_counter() - t0:.0f} s (first use, not timed)", file=sys.stderr)
    # the export step's rates, for the 7B arithmetic: the parameter hash of the torch model in hand
    options = ModelOptions(**common)
    nets = load_networks(options, model_config(options), model_files(options))
    modules = [nets.codec, nets.lm]
    n_params = sum(p.numel() for m in modules for p in m.parameters())
    t0 = time.perf_counter()
    weights_hash(modules)
    hash_s = time.perf_counter() - t0
    manifest = json.loads((folder / "manifest.json").read_text())
    del nets, modules

    paths = {"export step (torch model + hash)": {**common},
             "from the folder alone": {**common, "export_dir": str(folder)}}
    runs = {name: [] for name in paths}
    for _ in range(args.starts):
        for name, opts in paths.items():
            runs[name].append(start(opts, env))
    print(f"model backend start-up, config {args.config!r}, {args.precision} graphs on onnxruntime, "
          f"{args.starts} starts per path (fresh processes, alternating), {args.threads} thread(s)")
    print(f"{'path':<34}{'first frame s':>14}{'of it: load s':>15}{'peak RSS MB':>13}")
    med = {}
    for name, rs in runs.items():
        ff = float(np.median([r["first_frame_s"] for r in rs]))
        ld = float(np.median([r["load_s"] for r in rs]))
        rss = float(np.median([r["peak_rss_mb"] for r in rs]))
        med[name] = (ff, rss)
        print(f"{name:<34}{ff:>14.2f}{ld:>15.2f}{rss:>13.0f}")
    (a_ff, a_rss), (b_ff, b_rss) = med.values()
    print(f"ratio folder / export step: first frame {b_ff / a_ff:.2f}x, peak RSS {b_rss / a_rss:.2f}x")

    # ---- moshi-7b on paper ------------------------------------------------------------------
    small, big = frame_traffic(args.config), frame_traffic("moshi-7b")
    g = manifest["graphs"]
    lm_graphs = [g[n] for n in ("temporal", "depth")]
    codec_bytes = sum(g[n]["stored_bytes"] for n in ("encoder", "decoder"))  # the same Mimi at 7B
    per_matmul = sum(e["frame_bytes"] for e in lm_graphs) / small.lm_params
    per_table = sum(e["stored_bytes"] - e["frame_bytes"] for e in lm_graphs) / small.table_params
    big_graphs = per_matmul * big.lm_params + per_table * big.table_params + codec_bytes
    big_params = big.lm_params + big.codec_params + big.table_params
    big_torch = 4.0 * big_params  # the backend builds the networks in fp32
    rate = n_params * 4 / hash_s
    print(f"moshi-7b on paper (no face): the LM graphs' bytes per parameter as measured in this "
          f"{args.precision} export ({per_matmul:.3f} B per matmul weight, {per_table:.1f} B per "
          f"embedding entry) scaled to moshi-7b's {big.lm_params / 1e9:.2f} B matmul + "
          f"{big.table_params / 1e9:.2f} B embedding parameters, Mimi's graphs as measured; "
          f"parameter hash at {rate / 1e9:.2f} GB/s as measured here")
    print(f"  export step: torch model {big_torch / 1e9:.1f} GB (fp32) + graphs {big_graphs / 1e9:.1f} GB resident, "
          f"{big_torch / rate:.0f} s of parameter hashing before the first frame")
    print(f"  from the folder: graphs {big_graphs / 1e9:.1f} GB resident, no hashing (weight files checked "
          f"by size + mtime)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
