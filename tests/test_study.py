"""experiments/study.py, what every study shares: one reader per file a run leaves, the records kept
beside a page, paired differences, the words of a page taken from the recorded settings, and the
page writer that keeps the hand-written text; every committed page regenerates from its committed
JSON; and every study script's flags."""

import argparse
import importlib
import math
import shutil
from pathlib import Path

import pytest

import study
from conftest import REPO, write_outcomes
from data import UsageError

SCRIPTS = ("results", "frontier", "critics", "pilot", "snli", "long", "stall", "parity", "gpu", "curves", "demo", "meaning", "freelb")


# ---------------------------------------------------------------------------------------------
# Every page regenerates from its committed JSON

PAGES = {  # results/<page>.md: the script, and its arguments, that writes it
    "sst2-minilm": ["results"], "sst2-frontier": ["frontier"], "critic-lr": ["critics"], "parity-sst2": ["parity"],
    "sst2-pilot": ["pilot"], "snli": ["snli"], "sst2-long": ["long"], "stall-sst2": ["stall", "sst2"],
    "stall-snli": ["stall", "snli"], "meaning-sst2": ["meaning"], "sst2-freelb": ["freelb"],
    "parity-deepwordbug": ["parity", "--attack", "deepwordbug"],
}
GENERATED = sorted(path.stem for path in (REPO / "results").glob("*.md") if study.KEPT_TEXT in path.read_text())


def test_every_generated_page_has_the_script_that_writes_it():
    assert set(GENERATED) <= set(PAGES)


@pytest.mark.parametrize("page", GENERATED)
def test_every_page_regenerates_from_its_committed_json(page, tmp_path):
    """--table-only on a copy of the committed JSON and page rewrites the page byte for byte: its
    generated part holds nothing the JSON does not, and the hand-written part is kept."""
    script, *arguments = PAGES[page]
    for suffix in (".json", ".md"):
        shutil.copyfile(REPO / "results" / f"{page}{suffix}", tmp_path / f"{page}{suffix}")
    importlib.import_module(script).main([*arguments, "--table-only", "--results-dir", str(tmp_path)])
    assert (tmp_path / f"{page}.md").read_text() == (REPO / "results" / f"{page}.md").read_text()


def test_table_only_without_the_json_names_it(tmp_path):
    import pilot

    with pytest.raises(UsageError, match="sst2-pilot.json"):
        pilot.main(["--table-only", "--results-dir", str(tmp_path)])


# ---------------------------------------------------------------------------------------------
# One check per file a run leaves, and the page writer that keeps the hand-written text

def test_a_rewritten_page_keeps_the_text_below_the_marker(tmp_path):
    page = tmp_path / "results" / "table.md"
    study.write_page(page, "# Table\n\n```\n1 2\n```\n")
    assert page.read_text() == f"# Table\n\n```\n1 2\n```\n\n{study.KEPT_TEXT}\n"
    page.write_text(page.read_text() + "\nWhy the numbers are so.\n\n## More\n\nkept too\n")
    study.write_page(page, "# Table\n\n```\n3 4\n```\n")
    assert page.read_text() == f"# Table\n\n```\n3 4\n```\n\n{study.KEPT_TEXT}\n\nWhy the numbers are so.\n\n" \
                               "## More\n\nkept too\n"
    again = page.read_text()
    study.write_page(page, "# Table\n\n```\n3 4\n```\n")
    assert page.read_text() == again  # rewriting the same tables changes nothing


def test_a_page_without_the_marker_is_replaced_whole(tmp_path):
    page = tmp_path / "old.md"
    page.write_text("# Old\n\nan old generated page\n")
    study.write_page(page, "# New\n")
    assert page.read_text() == f"# New\n\n{study.KEPT_TEXT}\n"


def test_the_finished_checks_read_what_train_py_and_evaluate_py_leave(tmp_path):
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    assert study.trained(run) is None and not study.training_resumable(run) and study.training_log(run) == []
    (run / "last" / "training_state.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 1, "dev_accuracy": 0.5}\n')
    assert study.training_resumable(run) and [line["step"] for line in study.training_log(run)] == [1, 1]
    assert study.training_curve(run) == [{"step": 1, "loss": 0.5}]
    (run / "summary.json").write_text('{"best_dev_accuracy": 0.5}')
    assert study.trained(run) == {"best_dev_accuracy": 0.5}
    evaluation = run / "eval" / "pwws"
    assert not study.evaluation_started(evaluation) and study.evaluated(evaluation) is None
    evaluation.mkdir(parents=True)
    (evaluation / "results.json").write_text('{"complete": false}')
    assert study.evaluation_started(evaluation) and study.evaluated(evaluation) is None
    (evaluation / "results.json").write_text('{"complete": true, "metrics": []}')
    assert study.evaluated(evaluation) == {"complete": True, "metrics": []}
    assert study.measured_cka(run, "cls") is None
    study.cka_path(run, "cls").write_text('{"linear_cka": 0.25}')
    assert study.measured_cka(run, "cls") == 0.25


def test_the_words_of_a_report_come_from_the_recorded_settings():
    assert study.words_changed([{"max_modify_rate": 1.0}, None, {"max_modify_rate": 1.0}]) == "no cap on the words changed"
    assert study.words_changed([{"max_modify_rate": 0.3}]) == "at most 30% of the words changed"
    assert "default" in study.words_changed([None, {}])
    assert study.recorded([{"ascc_steps": 10}, None, {"ascc_steps": 5}], "ascc_steps", "-") == "10 / 5"
    assert study.recorded([None], "ascc_steps", "train.py's default") == "train.py's default"


def test_a_run_keeps_the_records_of_what_finished_and_none_of_its_checkpoints(tmp_path):
    run, kept = tmp_path / "runs" / "rift", tmp_path / "results" / "study" / "rift"
    for name in ("config.json", "metrics.jsonl", "best/model.safetensors", "last/training_state.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    study.copy_records(run, kept)
    assert not kept.exists()  # training has not finished: nothing to keep
    (run / "summary.json").write_text('{"best_dev_accuracy": 0.5}')
    study.cka_path(run, "mean").write_text('{"linear_cka": 0.25}')
    for name, complete in (("ascc", "true"), ("pwws", "false")):
        write_outcomes(run / "eval" / name, {3: "failed"})
        (run / "eval" / name / "results.json").write_text(f'{{"complete": {complete}}}')
    study.copy_records(run, kept)
    assert sorted(str(path.relative_to(kept)) for path in kept.rglob("*") if path.is_file()) == [
        "cka-mean.json", "config.json", "eval/ascc/adversarial.jsonl", "eval/ascc/results.json", "metrics.jsonl",
        "summary.json"]
    restored = tmp_path / "fresh" / "rift"
    study.copy_records(kept, restored)  # a machine without runs/: the run reads as finished again
    assert study.trained(restored) == {"best_dev_accuracy": 0.5} and study.measured_cka(restored, "mean") == 0.25
    assert study.example_outcomes(restored / "eval" / "ascc") == {3: (1, 1)}


def test_paired_gaps_are_differences_on_the_same_examples_where_both_runs_have_finished(tmp_path):
    statuses = {"adv": ["failed", "successful", "skipped", "failed", "successful"],  # right after: 1 0 0 1 0
                "rift": ["failed", "failed", "successful", "failed", "failed"]}   # right after: 1 1 0 1 1
    for name, column in statuses.items():
        write_outcomes(tmp_path / name / "eval" / "pwws", dict(enumerate(column, start=10)))
    rows = [dict(name="adv", against=None, clean_evaluation="pwws", pwws_accuracy=0.4),
            dict(name="rift", against="adv", clean_evaluation="pwws", pwws_accuracy=0.8),
            dict(name="rift-seed43", against="adv-seed43", pwws_accuracy=0.5),  # its adv has not finished
            dict(name="rift-cls", against="adv")]  # not attacked yet
    [gap] = study.paired_gaps(tmp_path, rows, ["pwws", "genetic"])
    assert (gap["run"], gap["against"]) == ("rift", "adv") and "genetic" not in gap
    # clean: differences 0 0 1 0 0, mean 0.2, sd sqrt(0.8 / 4); under attack: 0 1 0 0 1, mean 0.4, sd sqrt(1.2 / 4)
    assert gap["clean"] == pytest.approx(0.2) and gap["clean_se"] == pytest.approx(math.sqrt(0.2 / 5))
    assert gap["pwws"] == pytest.approx(0.4) and gap["pwws_se"] == pytest.approx(math.sqrt(0.3 / 5))



def test_the_worst_case_of_two_attacks_that_break_disjoint_examples_is_their_union(tmp_path):
    """AutoAttack's rule on a page: robust only if right and broken by neither attack; the
    examples both attacks met (index 14 only one did), paired like any attack's column."""
    statuses = {"adv": {"pwws": ["failed", "successful", "failed", "skipped", "failed"],
                        "ascc": ["failed", "failed", "successful", "skipped"]},
                "rift": {"pwws": ["failed", "failed", "failed", "failed", "failed"],
                         "ascc": ["successful", "failed", "failed", "failed"]}}
    for name, evaluations in statuses.items():
        for evaluation, column in evaluations.items():
            write_outcomes(tmp_path / name / "eval" / evaluation, dict(enumerate(column, start=10)))
    rows = [dict(name="adv", against=None, pwws_accuracy=0.6, ascc_accuracy=0.5),
            dict(name="rift", against="adv", pwws_accuracy=1.0, ascc_accuracy=0.75)]
    for row in rows:
        study.add_worst_case(row, tmp_path / row["name"], ["pwws", "ascc"])
    assert study.outcomes(tmp_path / "adv", study.WORST_CASE, ["pwws", "ascc"]) == {
        10: (1, 1), 11: (1, 0), 12: (1, 0), 13: (0, 0)}  # pwws broke 11, ascc 12: both gone
    assert rows[0]["worst_case_accuracy"] == 0.25 and rows[0]["worst_case_examples"] == 4
    assert rows[1]["worst_case_accuracy"] == 0.75
    [gap] = study.paired_gaps(tmp_path, rows, ["pwws", "ascc"])
    assert gap["worst_case"] == pytest.approx(0.5)  # differences -1 +1 +1 +1 over 4 examples
    single = dict(name="x", pwws_accuracy=0.5)
    study.add_worst_case(single, tmp_path / "adv", ["pwws"])
    assert "worst_case_accuracy" not in single  # one attack is its own worst case

# ---------------------------------------------------------------------------------------------
# Each script: its own flags, each with its default in its help

def script_parsers():
    """Every study script's parser (and each of gpu.py's actions), as each builds it."""
    built = []

    def keep(parser, *args, **kwargs):
        built.append(parser)
        raise SystemExit(0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", keep)
        for name in SCRIPTS:
            with pytest.raises(SystemExit):
                importlib.import_module(name).main([])  # each parses its flags first
    actions = [a for p in built for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return built + [sub for action in actions for sub in action.choices.values()]


def test_every_flag_with_a_default_says_it_in_its_help():
    for parser in script_parsers():
        for action in parser._actions:
            if action.default not in (None, False, argparse.SUPPRESS) and action.help != argparse.SUPPRESS:
                assert "default" in (action.help or ""), (parser.prog, action.option_strings)


def test_no_help_string_starts_with_an_action_name():
    """gpu.py's actions (bundle, run, file, ...): each help says what, not which action."""
    for parser in script_parsers():
        for actions in [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]:
            for action in [a for sub in actions.choices.values() for a in sub._actions]:
                assert (action.help or "").split(":")[0].split(",")[0] not in actions.choices, action.help


@pytest.mark.parametrize("script,argv,expected", [
    ("results", ["--table-only", "--runs", "r", "--results-dir", "t"],
     dict(table_only=True, runs=Path("r"), results_dir=Path("t"))),
    ("frontier", ["--smoke", "--model", "m", "--table-only"], dict(smoke=True, model="m", runs=Path("runs/frontier"))),
    ("critics", ["--smoke", "--results-dir", "t"], dict(smoke=True, results_dir=Path("t"))),
    ("pilot", ["--table-only"], dict(table_only=True, smoke=False, runs=Path("runs/pilot"), results_dir=Path("results"))),
    ("snli", ["--smoke", "--runs", "r"], dict(smoke=True, runs=Path("r"))),
    ("long", ["--data-dir", "d"], dict(data_dir="d", runs=Path("runs/long"))),
    ("stall", ["snli"], dict(task="snli", runs=Path("runs/stall-snli"))),
    ("stall", ["sst2", "--runs", "r"], dict(task="sst2", runs=Path("r"))),
    ("parity", ["--checkpoints", "a", "b", "--examples", "7", "--peer", "p"],
     dict(checkpoints=["a", "b"], examples=7, peer=Path("p"), runs=Path("runs/parity"))),
    ("curves", ["runs/x"], dict(run=Path("runs/x"))),
    ("gpu", ["run", "check", "--out", "o", "--smoke"], dict(action="run", steps=["check"], out=Path("o"), smoke=True)),
])
def test_each_script_takes_its_own_flags(script, argv, expected):
    args = importlib.import_module(script).parse_args(argv)
    assert {key: getattr(args, key) for key in expected} == expected


@pytest.mark.parametrize("script,argv", [("results", ["--smoke"]), ("results", ["--model", "m"]),
                                         ("critics", ["--runs", "r"]), ("curves", ["run", "--table-only"]),
                                         ("parity", ["--repeats", "2"]), ("frontier", ["--examples", "3"]),
                                         ("pilot", ["--json", "x"]), ("stall", ["imdb"]), ("gpu", ["plot"])])
def test_a_flag_of_another_script_is_refused_by_argparse(script, argv, capsys):
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(script).parse_args(argv)
    assert exit.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize("script,argv", [("parity", ["--examples", "0"]), ("curves", []), ("stall", []),
                                         ("gpu", ["run", "check"])])
def test_out_of_range_values_and_missing_arguments_are_refused_by_argparse(script, argv, capsys):
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(script).parse_args(argv)
    assert exit.value.code == 2 and "error:" in capsys.readouterr().err
