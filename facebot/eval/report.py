"""The terminal table (one column per input, so backends or settings sit side by side)."""
from __future__ import annotations


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _lat(stats: dict) -> str:
    if not stats or not stats.get("n"):
        return "-"
    return f"{stats['p50']:.3f}/{stats['p90']:.3f}"


def _lag(d) -> str:
    if not d or d.get("lag_ms") is None:
        return "-"
    return f"{d['lag_ms']:+.0f} ms (r {d['r']:.2f})"


def rows(result: dict) -> list[tuple[str, str]]:
    """(label, value) rows of one evaluation result."""
    d, f = result["duplex"], result["face"]
    tt, it = d["turn_taking"], d["interruption"]
    fl = f["flame"]
    return [
        ("audio (s)", _num(d["duration_s"], ".1f")),
        ("user / robot speech (s)", f"{d['user_speech_s']:.1f} / {d['robot_speech_s']:.1f}"),
        ("overlap (s)", _num(d["overlap_s"], ".2f")),
        ("pause: n, TOR (lower better)", f"{d['pause']['n']}, {_num(d['pause']['tor'], '.3f')}"),
        ("robot backchannels: n, /min", f"{d['backchannel']['n']}, {_num(d['backchannel']['per_min'], '.2f')}"),
        ("turn-taking: n, TOR", f"{tt['n']}, {_num(tt['tor'], '.3f')}"),
        ("  latency p50/p90 (s)", _lat(tt["latency_s"])),
        ("interruptions: n, stop rate", f"{it['n']}, {_num(it['stop_rate'], '.3f')}"),
        ("  stop latency p50/p90 (s)", _lat(it["stop_latency_s"])),
        ("  TOR, response p50/p90 (s)", f"{_num(it['tor'], '.3f')}, {_lat(it['latency_s'])}"),
        ("user backchannels: n, yield", f"{d['user_backchannel']['n']}, {_num(d['user_backchannel']['yield_rate'], '.3f')}"),
        ("lip sync: jaw shown", _lag(f["lip_sync_shown"])),
        ("lip sync: jaw command", _lag(f["lip_sync_command"])),
        ("FLAME fps, jitter (ms)", f"{_num(fl['fps'], '.2f')}, {_num(fl['jitter_ms'], '.2f')}"),
        ("FLAME missing, refused", f"{_num(fl['missing'], 'd')}, {_num(f['frames_refused'], 'd')}"),
    ]


def format_table(results: list[dict]) -> str:
    """One screen: a label column, then one column per result."""
    table = [rows(r) for r in results]
    labels = [label for label, _ in table[0]]
    width = max(len(x) for x in labels) + 2
    cols = [max([len(r["name"])] + [len(v) for _, v in t]) + 2 for r, t in zip(results, table)]
    lines = [" " * width + "".join(r["name"][-c + 2:].rjust(c) for r, c in zip(results, cols))]
    for i, label in enumerate(labels):
        lines.append(label.ljust(width) + "".join(t[i][1].rjust(c) for t, c in zip(table, cols)))
    return "\n".join(lines)
