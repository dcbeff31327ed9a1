"""bench.py as a user runs it: its flags (in-process), `cost` as an optional command name, and the
cost benchmark on a tiny model."""

import argparse
import json

import pytest

import bench
from conftest import run_cli


def test_bench_alone_and_cost_named_mean_the_same():
    assert bench.parse_args([]) == bench.parse_args(["cost"])
    args = bench.parse_args(["--smoke", "--json", "out.json"])
    assert (args.smoke, args.json) == (True, "out.json")
    assert bench.parse_args(["cost", "--adversary", "ascc"]).adversary == "ascc"


def test_the_flags_are_read():
    args = bench.parse_args(["cost", "--batch-size", "8", "--adversary", "ascc", "--ascc-steps", "2", "--amp",
                             "--attack-examples", "5", "--checkpoint", "c", "--repeats", "1", "--data-dir", "d"])
    assert {key: getattr(args, key) for key in ("batch_size", "adversary", "ascc_steps", "amp", "attack_examples",
                                                "checkpoint", "repeats", "data_dir")} == dict(
        batch_size=8, adversary="ascc", ascc_steps=2, amp=True, attack_examples=5, checkpoint="c", repeats=1,
        data_dir="d")


@pytest.mark.parametrize("argv", [["--checkpoints", "a"], ["results"], ["--table-only"], ["plot", "run"]])
def test_a_flag_or_command_of_the_laboratory_is_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.parse_args(argv)
    assert exit.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--batch-size", "1"], ["--repeats", "0"], ["--adversary", "fgsm"]])
def test_out_of_range_values_are_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.parse_args(argv)
    assert exit.value.code == 2 and "error:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The cost benchmark


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.mark.slow
def test_bench_smoke_writes_training_and_attack_costs(shared_data, tmp_path, cache, monkeypatch):
    monkeypatch.setenv("RIFT_DATA", str(shared_data))
    result = run_cli("--smoke", "--json", tmp_path / "bench.json", script="bench.py", cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["smoke"] is True
    rows = {row["method"]: row for row in report["training"]}
    assert set(rows) == {"standard", "adv", "rift", "freelb", "passes"}
    for method in ("standard", "adv", "rift", "freelb"):
        assert rows[method]["s_per_step"] > 0 and rows[method]["examples_per_s"] > 0
        assert rows[method]["measured_over_expected"] > 0
    assert rows["standard"]["expected_ratio"] == pytest.approx(1.0)
    assert rows["adv"]["expected_ratio"] >= 1 and rows["rift"]["expected_ratio"] >= rows["adv"]["expected_ratio"]
    assert rows["freelb"]["expected_ratio"] == pytest.approx(3.0)  # K = 3 forward and backward passes
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


def every_parser():
    """train.py's, evaluate.py's and bench.py's parsers, as each builds it (the laboratory's scripts':
    tests/test_study.py)."""
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
        bench.parse_args([])
    return built


def test_every_flag_with_a_default_says_it_in_its_help():
    for parser in every_parser():
        for action in parser._actions:
            if action.default not in (None, False, argparse.SUPPRESS) and action.help != argparse.SUPPRESS:
                assert "default" in (action.help or ""), (parser.prog, action.option_strings)
