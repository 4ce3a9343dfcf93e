"""The inner-monologue text: token ids from the language model to words a person can read.

Moshi's text stream is mostly padding: ids 0 (end of padding) and 3 (padding) carry no text
and are dropped, as Kyutai's server does. Without a tokenizer file (random weights, tests)
ids are shown as ``[id]`` so a person still sees that the stream is alive.
"""
from __future__ import annotations

from pathlib import Path

from facebot.errors import FacebotError

SILENT_TEXT_IDS = frozenset({0, 3})  # Moshi: end-of-padding and padding


class TokenizerError(FacebotError):
    """A tokenizer file that cannot be used; ``str()`` is one line."""


class TextTokenizer:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._sp = None
        if self.path is not None:
            if not self.path.is_file():
                raise TokenizerError(f"{self.path}: no such tokenizer file")
            import sentencepiece

            sp = sentencepiece.SentencePieceProcessor()
            try:
                ok = sp.Load(str(self.path))
            except (OSError, RuntimeError) as err:
                raise TokenizerError(f"{self.path}: not a sentencepiece model ({str(err).splitlines()[0]})") from None
            if not ok:
                raise TokenizerError(f"{self.path}: not a sentencepiece model")
            self._sp = sp

    @property
    def vocab_size(self) -> int | None:
        return self._sp.GetPieceSize() if self._sp is not None else None

    def piece(self, token: int) -> str:
        """The text a token adds to the monologue ('' for padding), word breaks as spaces."""
        token = int(token)
        if token in SILENT_TEXT_IDS or token < 0:
            return ""
        if self._sp is None:
            return f"[{token}]"
        if token >= self._sp.GetPieceSize():
            return f"[{token}]"
        return self._sp.IdToPiece(token).replace("\u2581", " ")

    def encode(self, text: str) -> list[int]:
        if self._sp is None:
            raise TokenizerError("no tokenizer file loaded")
        return list(self._sp.EncodeAsIds(text))
