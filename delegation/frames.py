"""FrameObservation: a video frame a session received, turned into a package observation on demand.

The live loop records the newest decoded frame of a turn window with `ConversationLog.observe_frame`
(a reference to the client's encoded frame: nothing is decoded or copied on the turn's path). Only
when a package is built (off the loop's event-loop thread) does `to_observation()` make the
VisualObservation: a small JPEG thumbnail (longest side `max_side`, quality `jpeg_quality`; a few
KB) and a description in words the interaction side can honestly give without a vision model: when
the frame arrived, its size and encoding, and the name of its mean colour. The result is cached on
the object, so a frame is thumbnailed once however many packages include it. A frame that does not
decode still yields an observation, with a description that says so and no image.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Any

from interplay.log import get_logger
from interplay.v1 import context_pb2 as xpb

log = get_logger("delegation.frames")

# interplay.v1.FrameEncoding numbers (session.proto); the encoded frame is read duck-typed.
JPEG, PNG, RAW_RGB = 1, 2, 3
_ENCODING = {JPEG: "JPEG", PNG: "PNG", RAW_RGB: "raw RGB"}

# Named colours for the mean-colour description (sRGB).
PALETTE = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 20), "yellow": (230, 220, 40), "green": (40, 170, 60), "blue": (40, 80, 210),
    "purple": (130, 50, 160), "pink": (240, 150, 190), "brown": (120, 75, 40), "cyan": (40, 200, 210),
}


@dataclass
class FrameConfig:
    """How a frame becomes an observation image."""

    max_side: int = 128      # thumbnail's longest side in pixels
    jpeg_quality: int = 60   # a 128 px thumbnail is about 2-4 KB


def colour_name(rgb: tuple[float, float, float]) -> str:
    """The PALETTE name nearest to `rgb` (Euclidean in sRGB: coarse, and said to be coarse)."""
    return min(PALETTE, key=lambda k: sum((a - b) ** 2 for a, b in zip(PALETTE[k], rgb, strict=True)))


@dataclass(eq=False)
class FrameObservation:
    """One received frame (`frame`: an interplay.v1.VideoFrame or anything with data, encoding,
    width and height) at session turn `turn` / time `time_ms`."""

    turn: int
    time_ms: int
    frame: Any
    config: FrameConfig = field(default_factory=FrameConfig)
    _made: xpb.VisualObservation | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_observation(self) -> xpb.VisualObservation:
        """The observation (thumbnail + description); made at the first call, then cached."""
        with self._lock:
            if self._made is None:
                self._made = self._make()
            return self._made

    def _make(self) -> xpb.VisualObservation:
        from PIL import Image, ImageStat

        f = self.frame
        enc = int(f.encoding)
        when = f"camera frame at {self.time_ms / 1000:.1f} s (turn {self.turn})"
        try:
            if enc == RAW_RGB:
                img = Image.frombytes("RGB", (int(f.width), int(f.height)), bytes(f.data))
            else:
                img = Image.open(io.BytesIO(f.data))
            width, height = img.size
            if enc != RAW_RGB:
                img.draft("RGB", (self.config.max_side, self.config.max_side))  # JPEG: decode at a reduced scale
                img = img.convert("RGB")
            img.thumbnail((self.config.max_side, self.config.max_side))
            mean = tuple(ImageStat.Stat(img).mean[:3])
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=self.config.jpeg_quality)
        except Exception as exc:  # noqa: BLE001 - a bad frame is described, not fatal to the package
            log.info("frame_not_thumbnailed", turn=self.turn, error=repr(exc))
            return xpb.VisualObservation(turn=self.turn, time_ms=self.time_ms,
                                         description=f"{when}: {_ENCODING.get(enc, 'unknown')} data that did not decode")
        desc = (f"{when}: {width}x{height} {_ENCODING.get(enc, 'image')}, mean colour {colour_name(mean)} "
                f"(rgb {mean[0]:.0f},{mean[1]:.0f},{mean[2]:.0f})")
        return xpb.VisualObservation(turn=self.turn, time_ms=self.time_ms, description=desc,
                                     image=buf.getvalue(), mime_type="image/jpeg")

