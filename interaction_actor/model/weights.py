"""Where the interaction model's weights live: the shipped checkpoints and their cards.

`interplay train` writes `<name>.pt` (config + weights, see model.save_checkpoint) and a card
`<name>.json` beside it (training config, seed, data version, measured scores). The package ships
one checkpoint per preset it was trained for, in interaction_actor/checkpoints/. Nothing here
loads a model: this module only names files, so training, evaluation and serving can share it
without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from interplay.log import get_logger

log = get_logger("interaction_actor.model.weights")

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "small.pt"


def card_path(checkpoint: str | Path) -> Path:
    """The card that describes a checkpoint (the same name, .json)."""
    return Path(checkpoint).with_suffix(".json")


def shipped_checkpoint(preset: str) -> str | None:
    """The checkpoint `interplay train` shipped for `preset` (interaction_actor/checkpoints/), if any."""
    path = CHECKPOINTS / f"{preset}.pt"
    return str(path) if path.is_file() else None


def resolve_checkpoint(preset: str, checkpoint: str | None) -> str | None:
    """None → the shipped checkpoint of the preset (random init when there is none); "none" → random init."""
    if checkpoint is None:
        found = shipped_checkpoint(preset)
        if found is None:
            log.warning("no_shipped_checkpoint", preset=preset, advice="run `interplay train`; using random init")
        return found
    return None if checkpoint.lower() in ("none", "random") else checkpoint
