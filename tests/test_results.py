"""experiments/results.py, the first table: built from finished run folders, its words taken from
the recorded settings, an unfinished evaluation named, the hand-written text kept."""

import importlib.util
import json
from pathlib import Path

import pytest

import results
from data import UsageError
from rift import METHODS
from study import KEPT_TEXT

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# ---------------------------------------------------------------------------------------------
# The table from finished run folders


def fake_results_runs(root: Path) -> dict:
    """Finished run folders as experiments/results.py leaves them; returns the numbers put in them."""
    expected = {}
    for n, method in enumerate(METHODS):
        run = root / f"sst2-{method}"
        (run / "eval" / "pgd").mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(
            {"method": method, "best_dev_accuracy": 0.7 + n / 100, "train_examples_per_s": 10.0 + n,
             "train_minutes": 3.5 + n}))
        (run / "config.json").write_text(json.dumps(
            {"config": {"method": method, "seed": 42}, "resolved": {"max_length": 64},
             "environment": {"platform": "Linux-test", "cpus": 2, "device": "cpu", "python": "3.11.0",
                             "torch": "2.13.0", "transformers": "5.24.0", "git_commit": "abc123"}}))
        clean = 0.8 + n / 100
        for k, (attack, synonyms) in enumerate(results.RESULTS_ATTACKS):
            under = 0.1 * (k + 1) + n / 100
            folder = run / "eval" / f"{attack}-{synonyms}"
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps({"complete": True, "environment": {"git_commit": "def456"},
                                                             "settings": {"attack": attack, "synonyms": synonyms}, "metrics": [
                {"attack": "none", "examples": 500, "clean_accuracy": clean},
                {"attack": attack, "synonyms": synonyms, "examples": 500, "clean_accuracy": clean,
                 "accuracy_under_attack": under, "attack_success_rate": 0.5, "words_perturbed_pct": 12.0,
                 "avg_queries": 99.0, "successful": 250, "failed": 150, "skipped": 100, "recheck_mismatches": 0,
                 "seconds_per_example": 0.2, "model_time_share": 0.9}]}))
            expected[(method, f"{attack}_{synonyms}")] = under
        pgd = [{"attack": "none", "examples": 500, "clean_accuracy": clean}]
        for eps in results.RESULTS["eps"]:
            pgd.append({"attack": f"pgd eps={eps:g}", "eps": eps, "examples": 500, "clean_accuracy": clean,
                        "accuracy_under_attack": clean - eps / 4, "seconds_per_example": 0.01})
            expected[(method, f"pgd_{eps:g}")] = clean - eps / 4
        (run / "eval" / "pgd" / "results.json").write_text(json.dumps({"complete": True, "environment": {"git_commit": "def789"},
                                                                       "settings": {"attack": "pgd"}, "metrics": pgd}))
        expected[(method, "clean_accuracy")] = clean
        expected[(method, "dev_accuracy")] = 0.7 + n / 100
    return expected


def test_write_results_builds_the_table_from_finished_runs(tmp_path, capsys):
    expected = fake_results_runs(tmp_path / "runs")
    results.write_results(tmp_path / "runs", tmp_path / "results")
    report = json.loads((tmp_path / "results" / "sst2-minilm.json").read_text())
    assert [row["method"] for row in report["table"]] == list(METHODS)
    for row in report["table"]:
        for (method, key), value in expected.items():
            if method == row["method"]:
                assert row[key] == pytest.approx(value), key
    evaluations = [f"{a}_{s}" for a, s in results.RESULTS_ATTACKS]
    assert set(report["table"][0]) == {"method", "dev_accuracy", "train_examples_per_s", "train_minutes",
                                       "clean_accuracy", *evaluations, "config", "resolved", "pgd_settings",
                                       *(f"{e}_settings" for e in evaluations)} | {
                                       f"pgd_{eps:g}" for eps in results.RESULTS["eps"]}
    for row in report["table"]:  # each run's whole training config and each evaluation's settings
        assert row["config"] == {"method": row["method"], "seed": 42} and row["resolved"] == {"max_length": 64}
        assert row["pgd_settings"] == {"attack": "pgd"}
        assert all(row[f"{a}_{s}_settings"] == {"attack": a, "synonyms": s} for a, s in results.RESULTS_ATTACKS)
    assert len(report["attack_details"]) == len(METHODS) * len(results.RESULTS_ATTACKS)
    assert report["environment"]["git_commit"] == "abc123"
    markdown = (tmp_path / "results" / "sst2-minilm.md").read_text()
    assert markdown.startswith("# SST-2") and "training abc123, evaluation def456, def789" in markdown and "Linux-test" in markdown
    assert "pwws/counterfitted" in markdown and f"pgd {results.RESULTS['eps'][-1]:g}" in markdown
    table = markdown[markdown.index("```") + 4:]
    rift_line = next(line for line in table.splitlines() if line.startswith("rift"))
    assert "0.72" in rift_line and "0.82" in rift_line and "0.32" in rift_line  # dev, clean, textfooler
    if HAS_MATPLOTLIB:
        assert (tmp_path / "results" / "sst2-minilm.png").stat().st_size > 0
    else:
        assert "no figure: plots need matplotlib" in capsys.readouterr().out

def test_the_results_page_states_the_settings_its_evaluations_recorded(tmp_path):
    fake_results_runs(tmp_path / "runs")
    for path in (tmp_path / "runs").glob("*/eval/*/results.json"):
        report = json.loads(path.read_text())
        report["settings"] |= {"max_modify_rate": 0.3 if "pwws" in str(path) else 1.0, "pgd_steps": 7,
                               "pgd_norm": "linf", "min_words": 5}
        path.write_text(json.dumps(report))
    results.write_results(tmp_path / "runs", tmp_path / "results")
    markdown = (tmp_path / "results" / "sst2-minilm.md").read_text()
    assert "word attacks change at most 30% of the words / any number of the words" in markdown
    assert "PGD takes 7 steps" in markdown and "LINF radius" in markdown and "at least 5 words" in markdown


def test_an_unfinished_evaluation_is_named_and_no_table_is_written(tmp_path):
    fake_results_runs(tmp_path / "runs")
    pgd = tmp_path / "runs" / "sst2-adv" / "eval" / "pgd" / "results.json"
    pgd.write_text(json.dumps(json.loads(pgd.read_text()) | {"complete": False}))
    with pytest.raises(UsageError, match="sst2-adv/eval/pgd"):
        results.write_results(tmp_path / "runs", tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_rewritten_table_keeps_the_hand_written_text(tmp_path):
    folder = tmp_path / "results"
    fake_results_runs(tmp_path / "runs")
    results.write_results(tmp_path / "runs", folder)
    (folder / "sst2-minilm.md").write_text((folder / "sst2-minilm.md").read_text() + "\nThe discussion.\n")
    results.write_results(tmp_path / "runs", folder)
    assert (folder / "sst2-minilm.md").read_text().endswith(f"{KEPT_TEXT}\n\nThe discussion.\n")
