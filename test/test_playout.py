"""PlayoutTracker: the dialogue node's playout delay from the audio player's feedback."""
import pytest

from facebot.pipeline.playout import FRAME_NS, PlayoutTracker

MS = 1_000_000


def test_no_feedback_keeps_the_configured_delay():
    t = PlayoutTracker()
    assert t.delay_ns(80 * MS, frame_stamp_ns=0, now_ns=200 * MS, measure=True) == 80 * MS


def test_a_late_speaker_raises_the_delay_and_an_early_one_never_lowers_it():
    t = PlayoutTracker()
    t.sent('a', 1_000 * MS)
    assert t.played('a', 1_400 * MS)  # heard 400 ms after it was published
    now, frame = 2_000 * MS, 1_840 * MS  # the frame ended 80 ms ago
    expect = now + 400 * MS - (frame + FRAME_NS)
    assert t.delay_ns(80 * MS, frame, now, measure=True) == expect > 80 * MS
    assert t.delay_ns(80 * MS, frame, now, measure=False) == 80 * MS
    t2 = PlayoutTracker()
    t2.sent('b', 0)
    t2.played('b', 1 * MS)  # a fast speaker
    assert t2.delay_ns(80 * MS, now - FRAME_NS, now, measure=True) == 80 * MS


def test_lag_is_smoothed_and_lost_chunks_do_not_pair_with_later_ones():
    t = PlayoutTracker(smoothing=0.5)
    for key, sent in (('a', 0), ('b', 80 * MS), ('c', 160 * MS)):
        t.sent(key, sent)
    assert t.played('a', 100 * MS) and t.lag_ns == 100 * MS
    # 'b' was lost by the player: 'c' matches 'c', and 'b' is gone for good
    assert t.played('c', 160 * MS + 300 * MS)
    assert t.lag_ns == pytest.approx(0.5 * 100 * MS + 0.5 * 300 * MS)
    assert not t.played('b', 999 * MS) and t.unmatched == 1
    t.reset()
    assert t.lag_ns is None and not t.played('x', 0)
