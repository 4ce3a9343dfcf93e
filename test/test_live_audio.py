"""Live microphone and speaker paths, against a stand-in for sounddevice (no sound card here).

The stand-in keeps sounddevice's signatures: InputStream(device, samplerate, channels,
blocksize, dtype, callback) calling callback(indata, frames, time_info, status) from its own
thread, and OutputStream with start/write/latency/stop/close.
"""
import json
import sys
import threading
import time
import types

import numpy as np
import pytest

from facebot import cli
from facebot.audio.espeak import EspeakVoice


class FakeStatus:
    input_overflow = False


class FakeTime:
    def __init__(self, now):
        self.currentTime = now
        self.inputBufferAdcTime = now - 0.005


def make_fake_sounddevice(signal, rate):
    sd = types.ModuleType("sounddevice")
    sd.PortAudioError = type("PortAudioError", (Exception,), {})
    sd.played = []

    def query_devices(device=None, kind=None):
        if device not in (None, 0):
            raise ValueError(f"No input device matching {device!r}")
        return {"name": "fake", "default_samplerate": float(rate)}

    class InputStream:
        def __init__(self, device=None, samplerate=None, channels=None, blocksize=None, dtype=None, callback=None):
            self.rate, self.block, self.callback, self.channels = samplerate, blocksize, callback, channels
            self._stop = threading.Event()

        def _run(self):
            t = 100.0
            for start in range(0, len(signal) - self.block + 1, self.block):
                if self._stop.is_set():
                    return
                block = np.repeat(signal[start:start + self.block, None], self.channels, axis=1)
                self.callback(block, self.block, FakeTime(t), FakeStatus())
                t += self.block / self.rate
                time.sleep(0.0005)

        def __enter__(self):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
            return self

        def __exit__(self, *exc):
            self._stop.set()
            self._thread.join()

    class OutputStream:
        latency = 0.05

        def __init__(self, device=None, samplerate=None, channels=None, dtype=None, latency=None):
            assert samplerate == 24000 and channels == 1

        def start(self):
            pass

        def write(self, data):
            assert data.shape == (1920, 1) and data.dtype == np.float32
            sd.played.append(data.copy())
            return False

        def stop(self):
            pass

        def close(self):
            pass

    sd.query_devices, sd.InputStream, sd.OutputStream = query_devices, InputStream, OutputStream
    return sd


@pytest.fixture
def fake_mic(monkeypatch):
    rate = 48000
    clip = EspeakVoice(voice="en-us+m3").synthesize("Hello robot, how are you today?", sample_rate=rate).audio
    signal = np.concatenate([np.zeros(rate // 2, np.float32), clip, np.zeros(rate * 3, np.float32)])
    sd = make_fake_sounddevice(signal, rate)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd, len(signal) / rate


def test_microphone_session_answers_and_plays(tmp_path, fake_mic):
    sd, seconds = fake_mic
    out = tmp_path / "live"
    rc = cli.main(["run", "--input", "mic", "--play", "--duration", str(seconds + 5), "--out", str(out), "--no-progress"])
    assert rc == 2  # the stand-in stops delivering audio: a clean one-line stop, not a hang
    assert not out.exists()


def test_microphone_session_with_duration(tmp_path, fake_mic):
    sd, seconds = fake_mic
    out = tmp_path / "live"
    rc = cli.main(["run", "--input", "mic", "--play", "--duration", str(seconds - 0.2), "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counters"]["replies_started"] == 1
    assert len(sd.played) == summary["frames"]  # every frame went to the speaker
    assert np.abs(np.concatenate(sd.played)).max() > 0.1  # and the reply was in it


def test_unknown_microphone_is_refused(tmp_path, fake_mic, capsys):
    rc = cli.main(["run", "--input", "mic", "--device", "7", "--out", str(tmp_path / "o")])
    assert rc == 2 and "no input device" in capsys.readouterr().err
