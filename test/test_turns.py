"""Turn-taking rules (pipeline/turns.py), frame by frame: the reply after end_of_turn_ms of
silence, too-short turns, mid-turn pauses and their backchannels, and barge-in."""
from facebot.config.loop import TurnConfig
from facebot.pipeline.backend import UserActivity
from facebot.pipeline.turns import TurnTaker

FRAME_MS = 80.0


class Voice:
    """The VAD's view of a user, one 80 ms frame per call: speaking, onset, silence so far."""

    def __init__(self) -> None:
        self.was_speaking = False
        self.silent_frames = 0

    def frame(self, speaking: bool) -> UserActivity:
        onset = speaking and not self.was_speaking
        self.was_speaking = speaking
        self.silent_frames = 0 if speaking else self.silent_frames + 1
        return UserActivity(speaking=speaking, onset=onset, silence_ms=self.silent_frames * FRAME_MS)


def play(taker, pattern, robot_speaking=False, voice=None):
    """Decisions for a pattern such as ``"S" * 10 + "." * 12`` (S: speech, .: silence)."""
    voice = voice or Voice()
    robot = robot_speaking if callable(robot_speaking) else (lambda i: robot_speaking)
    return [taker.update(voice.frame(c == "S"), robot(i)) for i, c in enumerate(pattern)]


def indices(decisions, field):
    return [i for i, d in enumerate(decisions) if getattr(d, field)]


def test_reply_comes_once_when_the_silence_reaches_end_of_turn_ms():
    decisions = play(TurnTaker(TurnConfig()), "S" * 10 + "." * 20)
    # 800 ms of silence is the 10th silent frame, frame 19 of the session
    assert indices(decisions, "reply") == [19]
    assert not any(d.backchannel or d.barge_in for d in decisions)  # an 800 ms turn: no "mm-hmm"


def test_end_of_turn_follows_the_configuration():
    cfg = TurnConfig(end_of_turn_ms=400.0, pause_min_ms=200.0)
    decisions = play(TurnTaker(cfg), "S" * 6 + "." * 10)
    assert indices(decisions, "reply") == [6 + 4]  # 400 ms = 5th silent frame


def test_a_pause_shorter_than_end_of_turn_keeps_the_turn_open():
    taker = TurnTaker(TurnConfig())
    decisions = play(taker, "S" * 5 + "." * 6 + "S" * 5 + "." * 10)
    assert indices(decisions, "reply") == [25]  # counted from the second stretch's end
    # mid-turn pause: from 240 ms of silence until the turn ends
    assert indices(decisions, "user_pause") == [7, 8, 9, 10, 18, 19, 20, 21, 22, 23, 24]


def test_speech_shorter_than_min_turn_speech_ms_gets_no_reply():
    taker = TurnTaker(TurnConfig(min_turn_speech_ms=300.0))
    assert not indices(play(taker, "S" * 3 + "." * 12), "reply")  # 240 ms: a cough
    assert taker.turn_speech_ms == 0.0  # the turn was closed all the same
    assert indices(play(taker, "S" * 4 + "." * 12), "reply") == [13]  # 320 ms: a turn


def test_no_reply_while_the_robot_speaks_and_none_later():
    taker = TurnTaker(TurnConfig())
    decisions = play(taker, "S" * 10 + "." * 20, robot_speaking=lambda i: i < 22)
    assert not indices(decisions, "reply")  # the turn ended (frame 19) over the robot's voice


def test_silence_before_any_speech_decides_nothing():
    decisions = play(TurnTaker(TurnConfig()), "." * 30)
    assert not any(d.reply or d.backchannel or d.barge_in or d.user_pause for d in decisions)


def test_backchannel_once_per_pause_after_backchannel_min_turn_ms():
    cfg = TurnConfig(backchannel_min_turn_ms=2500.0, backchannel_interval_s=4.0)
    taker = TurnTaker(cfg)
    # 1.6 s of speech: a pause, not yet long enough a turn to nod along
    first = play(taker, "S" * 20 + "." * 5)
    assert indices(first, "user_pause") == [22, 23, 24] and not indices(first, "backchannel")
    # the turn goes on to 3.2 s of speech: the next pause gets one backchannel, at 240 ms
    voice = Voice()
    voice.silent_frames = 5
    second = play(taker, "S" * 20 + "." * 5, voice=voice)
    assert indices(second, "backchannel") == [22]
    assert taker.turn_speech_ms == 3200.0


def test_one_backchannel_per_pause_even_without_an_interval():
    taker = TurnTaker(TurnConfig(backchannel_min_turn_ms=1000.0, backchannel_interval_s=0.0))
    decisions = play(taker, "S" * 20 + "." * 6 + "S" * 2 + "." * 6)
    assert indices(decisions, "backchannel") == [22, 30]


def test_backchannels_are_spaced_by_backchannel_interval_s():
    taker = TurnTaker(TurnConfig(backchannel_min_turn_ms=2000.0, backchannel_interval_s=4.0))
    pattern = ("S" * 30 + "." * 5) * 4  # a pause every 2.8 s, never long enough to end the turn
    decisions = play(taker, pattern)
    pauses = [35 * k + 32 for k in range(4)]  # the 3rd silent frame of each pause
    assert indices(decisions, "user_pause") == [p + d for p in pauses for d in (0, 1, 2)]
    # first pause at 2.4 s of speech; 2.8 s later is too soon; 5.6 s later is not
    assert indices(decisions, "backchannel") == [pauses[0], pauses[2]]


def test_no_backchannel_over_the_robot():
    taker = TurnTaker(TurnConfig(backchannel_min_turn_ms=1000.0))
    decisions = play(taker, "S" * 20 + "." * 5, robot_speaking=True)
    assert indices(decisions, "user_pause") == [22, 23, 24] and not indices(decisions, "backchannel")


def test_barge_in_on_the_onset_of_speech_over_the_robot():
    taker = TurnTaker(TurnConfig())
    decisions = play(taker, "." * 3 + "S" * 5 + "." * 3 + "S" * 2, robot_speaking=True)
    assert indices(decisions, "barge_in") == [3, 11]  # each onset, not every speech frame
    quiet_robot = play(TurnTaker(TurnConfig()), "." * 3 + "S" * 5)
    assert not indices(quiet_robot, "barge_in")


def test_barge_in_can_be_switched_off():
    decisions = play(TurnTaker(TurnConfig(barge_in=False)), "." * 3 + "S" * 5, robot_speaking=True)
    assert not indices(decisions, "barge_in")


def test_reset_forgets_the_turn():
    taker = TurnTaker(TurnConfig())
    play(taker, "S" * 10 + "." * 5)
    assert taker.turn_speech_ms == 800.0
    taker.reset()
    assert taker.turn_speech_ms == 0.0
    voice = Voice()
    voice.silent_frames = 5
    assert not indices(play(taker, "." * 10, voice=voice), "reply")  # no turn left to answer
