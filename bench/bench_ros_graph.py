"""What the ROS graph adds to each 80 ms frame: microphone chunk -> robot audio / FLAME on
the real DDS graph, side by side with the same duplex loop called in-process, one run.

On the graph (colcon-built workspace, ``ros2 launch facebot facebot.launch.py``, cyclonedds on
localhost), a probe process publishes a spoken utterance on ``audio/in`` in real time, in
20 ms chunks stamped with their capture time, and receives ``audio/out`` and ``face/flame``.
The latency of output frame k is its arrival time minus the moment input frame k was
complete (the end of its last sample), which the output's stamp gives back exactly:
stamp = frame end + playout delay. In-process: the same loop (backend, face, VAD) steps the
same frames; its latency is the step time alone (a frame is stepped the moment it exists).

    python bench/bench_ros_graph.py                   # scripted backend, the sample utterance
    python bench/bench_ros_graph.py --seconds 30      # longer input
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))

PLAYOUT_NS = 80_000_000  # config/facebot_nodes.yaml playout_delay_ms


def stats(values_ms) -> str:
    a = np.asarray(values_ms)
    return f'{np.percentile(a, 50):7.1f} {np.percentile(a, 99):7.1f} {a.max():7.1f}'


def make_input(path: Path, seconds: float) -> None:
    """The user's side of the sample conversation (espeak-ng), cut to ``seconds``."""
    from facebot.pipeline.sample import ensure_sample
    audio, rate = soundfile.read(ensure_sample(), dtype='float32', always_2d=True)
    soundfile.write(path, audio[: int(seconds * rate)].mean(axis=1), rate)


def in_process(path: Path) -> list[float]:
    """Step time (ms) of each frame with the loop called directly."""
    from facebot.audio.framing import AudioFramer
    from facebot.assembly import build_loop
    from facebot.config.pipeline import PipelineConfig
    audio, rate = soundfile.read(path, dtype='float32')
    loop = build_loop(PipelineConfig())
    framer = AudioFramer()
    times = []
    chunk = rate // 50
    for start in range(0, audio.shape[0] - chunk + 1, chunk):
        for frame in framer.push(audio[start:start + chunk], rate, start * 10**9 // rate):
            t0 = time.perf_counter()
            loop.step(frame, playout_delay_ns=PLAYOUT_NS)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def on_graph(path: Path, work: Path) -> dict:
    import ros_graph
    g = ros_graph.Graph(work)
    try:
        g.launch('backend:=scripted', 'start_audio:=false')
        g.wait_nodes('/dialogue', '/head_driver', '/face_display', active='/dialogue')
        res = g.probe('converse', '--wav', str(path), '--lead-s', '0', '--tail-s', '1',
                      timeout=600)
    finally:
        g.close()
    t = res['topics']
    audio = [(m['recv'] - (m['stamp'] - PLAYOUT_NS)) / 1e6 for m in t['audio/out']]
    flame = [(m['recv'] - (m['stamp'] - PLAYOUT_NS)) / 1e6 for m in t['face/flame'][::2]]
    return {'audio': audio, 'flame': flame}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=20.0, help='input length')
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / 'user.wav'
        make_input(wav, args.seconds)
        local = in_process(wav)
        graph = on_graph(wav, Path(tmp) / 'graph')
    print(f'{len(local)} frames in-process, {len(graph["audio"])} on the graph '
          f'(scripted backend, {args.seconds:.0f} s of input)')
    print(f'{"path":58s}{"p50":>7s} {"p99":>7s} {"max":>7s}  (ms)')
    print(f'{"in-process: frame complete -> step done":58s}{stats(local)}')
    print(f'{"graph: frame complete on audio/in -> audio/out received":58s}{stats(graph["audio"])}')
    print(f'{"graph: frame complete on audio/in -> face/flame received":58s}{stats(graph["flame"])}')
    over = np.percentile(graph['audio'], 50) - np.percentile(local, 50)
    over99 = np.percentile(graph['audio'], 99) - np.percentile(local, 99)
    print(f'ROS overhead per 80 ms frame (audio): p50 {over:.1f} ms, p99 {over99:.1f} ms; '
          f'graph / in-process p50 ratio {np.percentile(graph["audio"], 50) / np.percentile(local, 50):.1f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
