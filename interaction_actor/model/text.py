"""Byte-level vocabulary: ids 0..255 are UTF-8 bytes, then the special and control tokens.

Nothing is downloaded: text in is `encode(str) -> bytes ids`, text out is decoded incrementally
(`Utf8Stream`) because a character's bytes may be emitted across micro-turns.
"""

from __future__ import annotations

import codecs

N_BYTES = 256

# surfacing-mode markers: the first byte of each background message in the context slots (control
# characters no text carries: featurize strips them from anything else). NOW: voice it at once;
# IDLE: voice it at the user's next pause; SILENT: context only, never voiced.
CTX_NOW, CTX_IDLE, CTX_SILENT = "\x1d", "\x1e", "\x1f"
MODE_MARKERS = CTX_NOW + CTX_IDLE + CTX_SILENT

# special tokens (input side)
PAD = 256  # empty text-in slot
TURN = 257  # turn marker
TURN_BARGE_IN = 258  # turn marker of a window in which the user barged in
AUDIO = 259  # audio-frame slot carrying dMel (its bag of embeddings is added)
SILENCE = 260  # audio-frame slot with no audio
IMAGE = 261  # image-patch slot carrying an hMLP token
NO_FRAME = 262  # image-patch slot with no video frame
CTX_PAD = 263  # empty context-injection slot
OUT = 264  # output marker: its logits predict the turn's first output token
BOS = 265  # position 0 of every sequence (stands where a previous turn's last output would be)
MEL_VOICED = 266  # mel-out slot of a voiced turn
MEL_QUIET = 267  # mel-out slot of a silent turn
# output tokens (besides bytes)
EMPTY = 268  # "nothing this slot"
DELEGATE = 269  # start of a delegated task's text (bytes until DELEGATE_END)
DELEGATE_END = 270
START_SPEAKING = 271
STOP_SPEAKING = 272
LISTEN = 273
# silent state tokens <state:0> .. <state:13>: a small number the model writes to itself (a countdown
# to a timed utterance, a running tally) and reads back next turn; never voiced, never text
STATE_BASE = 274
STATE_VALUES = 14

VOCAB_SIZE = 288  # 288 used (a multiple of 32)

CONTROL_NAMES: dict[int, str] = {
    DELEGATE: "delegate",
    START_SPEAKING: "start_speaking",
    STOP_SPEAKING: "stop_speaking",
    LISTEN: "listen",
}
OUTPUT_TOKENS: tuple[int, ...] = (*range(N_BYTES), EMPTY, DELEGATE, DELEGATE_END, START_SPEAKING,
                                  STOP_SPEAKING, LISTEN, *range(STATE_BASE, STATE_BASE + STATE_VALUES))
TOKEN_NAMES: dict[int, str] = {
    PAD: "<pad>", TURN: "<turn>", TURN_BARGE_IN: "<turn:barge_in>", AUDIO: "<audio>", SILENCE: "<silence>",
    IMAGE: "<image>", NO_FRAME: "<no_frame>", CTX_PAD: "<ctx_pad>", OUT: "<out>", BOS: "<bos>",
    MEL_VOICED: "<mel:voiced>", MEL_QUIET: "<mel:quiet>", EMPTY: "<empty>", DELEGATE: "<delegate>",
    DELEGATE_END: "</delegate>", START_SPEAKING: "<start_speaking>", STOP_SPEAKING: "<stop_speaking>",
    LISTEN: "<listen>",
    **{STATE_BASE + n: f"<state:{n}>" for n in range(STATE_VALUES)},
}


def state_token(n: int) -> int:
    """The silent state token <state:n>, 0 <= n < STATE_VALUES."""
    if not 0 <= n < STATE_VALUES:
        raise ValueError(f"state value {n} outside 0..{STATE_VALUES - 1}")
    return STATE_BASE + n


def state_value(token: int) -> int | None:
    """n for <state:n>, None for any other token."""
    return token - STATE_BASE if STATE_BASE <= token < STATE_BASE + STATE_VALUES else None


def encode(text: str) -> list[int]:
    """UTF-8 bytes of `text` as token ids."""
    return list(text.encode("utf-8"))


def decode(ids: list[int]) -> str:
    """Bytes among `ids` decoded as UTF-8 (invalid sequences replaced); special tokens skipped."""
    return bytes(i for i in ids if 0 <= i < N_BYTES).decode("utf-8", errors="replace")


def token_name(i: int) -> str:
    return TOKEN_NAMES.get(i, repr(bytes([i])) if 0 <= i < N_BYTES else f"<unused:{i}>")


class Utf8Stream:
    """Incremental UTF-8 decoder: feed byte ids as they are emitted, get whole characters back."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: list[int]) -> str:
        return self._dec.decode(bytes(ids))
