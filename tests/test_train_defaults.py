"""Where `interplay train` writes: under runs/ unless told otherwise, never over the shipped checkpoint
that the demo, serve and eval load."""

from __future__ import annotations

import hashlib

from typer.testing import CliRunner

from interaction_actor.model.config import PRESETS
from interaction_actor.model.weights import CHECKPOINTS, DEFAULT_CHECKPOINT
from interaction_actor.training.train import default_out, train_main
from interplay.cli import app


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def test_train_never_writes_the_shipped_checkpoint_by_default(tmp_path, monkeypatch):
    """A one-step run of the tiny preset with no --out, from a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the resumable state, too
    before = {p.name: _digest(p) for p in CHECKPOINTS.glob("*")}
    card = train_main(preset="tiny", steps=1, threads=1, evaluate_after=False, progress=False)
    assert (tmp_path / "runs" / "train" / "tiny.pt").is_file() and card["checkpoint"] == "tiny.pt"
    assert {p.name: _digest(p) for p in CHECKPOINTS.glob("*")} == before


def test_no_presets_default_output_lies_in_the_shipped_checkpoint_folder():
    for name in PRESETS:
        out = default_out(name).resolve()
        assert out.parent.name == "train" and out.parent.parent.name == "runs"
        assert CHECKPOINTS.resolve() not in out.parents and out != DEFAULT_CHECKPOINT.resolve()


def test_train_help_says_where_the_checkpoint_goes_and_that_the_shipped_one_is_kept():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "runs/train/<preset>.pt" in text and "never written" in text
