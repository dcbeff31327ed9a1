"""experiments/curves.py: a train.py run's training curves, drawn as a user runs it, with each term's
pull where the run logged it, and a one-line error without matplotlib."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import curves
import study
from conftest import assert_one_line_error, run_cli

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny_run(tiny_model, shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curves") / "run"
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "standard",
                     "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4, "--max-length", 32,
                     "--seed", 3, "--out", out, cache=out.parent / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: the error path is tested instead")
def test_the_training_curves_of_a_run_are_drawn(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    result = run_cli(run, script="experiments/curves.py", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "training.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(HAS_MATPLOTLIB, reason="matplotlib is installed: the plot itself is tested instead")
def test_the_curves_without_matplotlib_are_a_one_line_error(tiny_run, tmp_path):
    result = run_cli(tiny_run, script="experiments/curves.py", cache=tmp_path / "cache")
    assert_one_line_error(result, "matplotlib", "requirements-extra.txt")
    assert not (tiny_run / "training.png").exists()


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: the error path is tested instead")
@pytest.mark.parametrize("log_pulls", [False, True])
def test_the_training_plot_draws_the_pulls_where_the_run_logged_them(tmp_path, log_pulls):
    pulls = {"pull_ce": 0.3, "pull_kl": 0.2, "pull_mi": 0.9, "cos_ce_kl": 0.1, "cos_ce_mi": 0.0, "cos_kl_mi": -0.1}
    lines = [{"step": step, "loss": 1.0, "ce": 0.7, "kl": 0.01, "mi_nce": 2.0, "mi_bound": 0.5,
              **(pulls if log_pulls else {})} for step in (1, 2, 3)] + [{"step": 3, "dev_accuracy": 0.6}]
    (tmp_path / study.TRAINING_LOG).write_text("".join(json.dumps(line) + "\n" for line in lines))
    drawn = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(curves, "save_figure", lambda figure, path: (
            drawn.append([axis.get_title() for axis in figure.axes]), curves.pyplot().close(figure)))
        curves.plot_run(tmp_path)
    assert len(drawn[0]) == (5 if log_pulls else 3)
    assert any("gradient norm" in title for title in drawn[0]) == log_pulls
