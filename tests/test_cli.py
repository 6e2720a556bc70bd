"""The command line: version, the loss list, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from lmdistill import __version__
from lmdistill.cli import main
from lmdistill.losses import names


def test_version():
    completed = subprocess.run([sys.executable, "-m", "lmdistill", "--version"], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.strip() == f"lmdistill {__version__}"


def test_losses_lists_every_registered_loss_with_parameters(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in names():
        assert f"\n{name} " in f"\n{out}"
    assert "beta=0.5" in out and "temperature=1.0" in out


def test_user_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: x\nteacher: {path: t}\nstudent: {path: s}\ndata: {train: d}\n"
                      "objective: [{name: nope}]\ntrain: {max_steps: 1}\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown loss 'nope'" in err and "\n" not in err and "Traceback" not in err


def test_cli_runs_the_tiny_causal_example_end_to_end(tmp_path, monkeypatch, capsys):
    """`lmdistill train --config configs/tiny-causal.yaml` from the repo root (its paths are relative to it)."""
    from pathlib import Path

    from conftest import require_shared_data

    require_shared_data("tinystories")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    out = tmp_path / "tiny"
    code = main(["train", "--config", "configs/tiny-causal.yaml", f"output_dir={out}", "train.max_steps=3",
                 "train.eval_every=3", "train.save_every=3", "train.progress=false"])
    assert code == 0, capsys.readouterr().err
    assert "finished after 3 steps" in capsys.readouterr().out
    assert (out / "student" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "step-00000003" / "trainer_state.json").is_file()
