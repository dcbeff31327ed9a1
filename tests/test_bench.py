"""bench.py as a user runs it: its sub-commands and their flags (in-process), the cost benchmark
on a tiny model, and the training-curves plot of a train.py run."""

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import bench
from conftest import assert_one_line_error, run_cli

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# ---------------------------------------------------------------------------------------------
# The sub-commands: each with only its own flags


def test_bench_alone_and_flags_before_any_command_mean_cost():
    assert bench.parse_args([]).command == "cost"
    args = bench.parse_args(["--smoke", "--json", "out.json"])
    assert (args.command, args.smoke, args.json) == ("cost", True, "out.json")
    assert bench.parse_args(["--adversary", "ascc"]).adversary == "ascc"


@pytest.mark.parametrize("argv,expected", [
    (["cost", "--batch-size", "8", "--adversary", "ascc", "--ascc-steps", "2", "--amp", "--attack-examples", "5",
      "--checkpoint", "c", "--repeats", "1", "--data-dir", "d"],
     dict(batch_size=8, adversary="ascc", ascc_steps=2, amp=True, attack_examples=5, checkpoint="c", repeats=1,
          data_dir="d")),
    (["results", "--table-only", "--runs", "r", "--results-dir", "t"],
     dict(table_only=True, runs=Path("r"), results_dir=Path("t"))),
    (["frontier", "--smoke", "--model", "m", "--table-only"], dict(smoke=True, model="m", runs=Path("runs/frontier"))),
    (["critics", "--smoke", "--results-dir", "t"], dict(smoke=True, results_dir=Path("t"))),
    (["pilot", "--table-only"], dict(table_only=True, smoke=False, runs=Path("runs/pilot"), results_dir=Path("results"))),
    (["snli", "--smoke", "--runs", "r"], dict(smoke=True, runs=Path("r"))),
    (["long", "--data-dir", "d"], dict(data_dir="d", runs=Path("runs/long"))),
    (["parity", "--checkpoints", "a", "b", "--examples", "7", "--peer", "p"],
     dict(checkpoints=["a", "b"], examples=7, peer=Path("p"), runs=Path("runs/parity"))),
    (["plot", "runs/x"], dict(run=Path("runs/x"))),
])
def test_each_command_takes_its_own_flags(argv, expected):
    args = bench.parse_args(argv)
    assert args.command == argv[0] and {key: getattr(args, key) for key in expected} == expected


@pytest.mark.parametrize("argv", [["results", "--smoke"], ["critics", "--table-only"], ["critics", "--runs", "r"],
                                  ["plot", "run", "--table-only"], ["parity", "--repeats", "2"],
                                  ["cost", "--checkpoints", "a"], ["frontier", "--examples", "3"],
                                  ["pilot", "--json", "x"], ["results", "--model", "m"]])
def test_a_flag_of_another_command_is_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.parse_args(argv)
    assert exit.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["cost", "--batch-size", "1"], ["cost", "--repeats", "0"],
                                  ["parity", "--examples", "0"], ["plot"], ["nosuchcommand"]])
def test_out_of_range_values_and_missing_arguments_are_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.parse_args(argv)
    assert exit.value.code == 2 and "error:" in capsys.readouterr().err


def test_no_help_string_starts_with_a_command_name():
    [commands] = [a for a in bench.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"cost", "results", "frontier", "critics", "pilot", "snli", "long", "parity", "plot", "gpu",
                                     "stall-snli", "stall-sst2"}
    for parser in commands.choices.values():
        for action in parser._actions:
            assert (action.help or "").split(":")[0].split(",")[0] not in commands.choices, action.help


# ---------------------------------------------------------------------------------------------
# The cost benchmark


@pytest.mark.slow
def test_bench_smoke_writes_training_and_attack_costs(shared_data, tmp_path, cache, monkeypatch):
    monkeypatch.setenv("RIFT_DATA", str(shared_data))
    result = run_cli("--smoke", "--json", tmp_path / "bench.json", script="bench.py", cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["smoke"] is True
    rows = {row["method"]: row for row in report["training"]}
    assert set(rows) == {"standard", "adv", "rift", "passes"}
    for method in ("standard", "adv", "rift"):
        assert rows[method]["s_per_step"] > 0 and rows[method]["examples_per_s"] > 0
        assert rows[method]["measured_over_expected"] > 0
    assert rows["standard"]["expected_ratio"] == pytest.approx(1.0)
    assert rows["adv"]["expected_ratio"] >= 1 and rows["rift"]["expected_ratio"] >= rows["adv"]["expected_ratio"]
    assert all(rows["passes"][k] > 0 for k in ("forward_backward_s", "attack_s", "teacher_forward_s"))
    ways = {(row["search"], row["examples_at_once"]): row for row in report["attacks"]}
    assert set(ways) == {("fp32", 1), ("fp32", 32), ("bf16", 1), ("bf16", 32)}
    for row in ways.values():
        assert 0 < row["model_time_share"] <= 1 and row["attack_examples_per_s"] > 0
        assert row["recheck_mismatches"] == 0 and row["avg_queries"] >= 1
    assert ways[("fp32", 32)]["outcomes_differing"] == 0  # many at once: the results of one at a time
    window = report["imdb_window"]
    assert window["examples"] == 8 and 0 < window["ranking_queries_in_window"] <= window["ranking_queries_every_word"]
    assert "time in model" in result.stdout and "x standard" in result.stdout and "truncation window" in result.stdout


# ---------------------------------------------------------------------------------------------
# The training curves of a run


@pytest.fixture(scope="module")
def tiny_run(tiny_model, shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "run"
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "standard",
                     "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4, "--max-length", 32,
                     "--seed", 3, "--out", out, cache=out.parent / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: the error path is tested instead")
def test_bench_plot_draws_the_training_curves(tiny_run, tmp_path, cache):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    result = run_cli("plot", run, script="bench.py", cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "training.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(HAS_MATPLOTLIB, reason="matplotlib is installed: the plot itself is tested instead")
def test_bench_plot_without_matplotlib_is_a_one_line_error(tiny_run, cache):
    result = run_cli("plot", tiny_run, script="bench.py", cache=cache)
    assert_one_line_error(result, "matplotlib", "requirements-extra.txt")
    assert not (tiny_run / "training.png").exists()


def every_parser():
    """train.py's, evaluate.py's and each bench.py command's parser, as each builds it."""
    import evaluate
    import train
    built = []
    real = argparse.ArgumentParser.parse_args

    def keep(parser, *args, **kwargs):
        built.append(parser)
        return real(parser, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", keep)
        train.parse_args([])
        evaluate.parse_args([])
    [commands] = [a for a in bench.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return [built[0], built[1], *commands.choices.values()]


def test_every_flag_with_a_default_says_it_in_its_help():
    for parser in every_parser():
        for action in parser._actions:
            if action.default not in (None, False, argparse.SUPPRESS) and action.help != argparse.SUPPRESS:
                assert "default" in (action.help or ""), (parser.prog, action.option_strings)
