"""experiments/frontier.py: end to end on a tiny model (trained, measured, attacked, resumed, the
table from what has finished), rift paired with adv on the same sentences, the two searches
compared on the sentences both attacked, the hand-written text kept."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

import frontier
from conftest import run_cli, write_outcomes
from study import KEPT_TEXT


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("frontier")


# ---------------------------------------------------------------------------------------------
# The frontier end to end on a tiny model


def run_frontier(workspace, shared_data):
    return run_cli("--smoke", "--runs", workspace / "frontier", "--results-dir", workspace / "results",
                   "--data-dir", shared_data, script="experiments/frontier.py", cache=workspace / "cache",
                   timeout=900)


@pytest.fixture(scope="module")
def frontier_done(workspace, shared_data):
    result = run_frontier(workspace, shared_data)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_frontier_trains_attacks_and_measures_every_run_and_writes_the_table(frontier_done, workspace):
    runs = frontier.frontier_runs(frontier.FRONTIER_SMOKE)
    assert [r["name"] for r in runs] == ["standard", "adv-beta10", "rift-beta10"]
    report = json.loads((workspace / "results" / "sst2-frontier.json").read_text())
    assert [r["name"] for r in report["runs"]] == [r["name"] for r in runs]
    for row in report["runs"]:
        run = workspace / "frontier" / row["name"]
        recorded = json.loads((run / "config.json").read_text())
        config = recorded["config"]
        assert config["method"] == row["method"] and config["max_steps"] == 2
        assert row["config"] == config and row["resolved"] == recorded["resolved"]  # the JSON says how it was trained
        assert config["adversary"] == ("pgd" if row["method"] == "standard" else "ascc")
        assert row["beta"] == (None if row["method"] == "standard" else 10.0)
        genetic = json.loads((run / "eval" / "genetic" / "results.json").read_text())
        assert genetic["settings"]["synonyms"] == "counterfitted" and genetic["settings"]["num_examples"] == 3
        assert json.loads((run / "eval" / "pwws" / "results.json").read_text())["settings"]["attack"] == "pwws"
        assert row["genetic_settings"] == genetic["settings"] and row["pwws_settings"]["attack"] == "pwws"
        assert row["examples"] == row["pwws_examples"] == 4 and row["genetic_examples"] == 3
        assert 0 <= row["teacher_cka"] <= 1 + 1e-9
        for key, n in (("clean", 4), ("pwws", 4), ("pwws_counterfitted", 4), ("genetic", 3)):  # clean accuracy: that of the larger sample
            p = row[f"{key}_accuracy"]
            assert row[f"{key}_se"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    markdown = (workspace / "results" / "sst2-frontier.md").read_text()
    assert "3 of 3 runs finished" in markdown and "rift-beta10" in markdown and "±" in markdown
    [gap] = report["rift_minus_adv"]
    assert gap["beta"] == 10.0 and set(gap) >= {"clean", "pwws", "pwws_counterfitted", "genetic"} and "rift minus adv" in markdown
    assert [o["run"] for o in report["genetic_against_pwws"]] == [r["name"] for r in runs]
    assert "genetic against pwws/counterfitted on the sentences both attacked" in markdown
    assert "CKA with teacher" in frontier_done.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (workspace / "results" / "sst2-frontier.png").stat().st_size > 0
    else:
        assert "no figure: plots need matplotlib" in frontier_done.stdout


@pytest.mark.slow
def test_frontier_skips_what_has_finished_and_redoes_only_what_is_missing(frontier_done, workspace, shared_data):
    root = workspace / "frontier"
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.json")}
    again = run_frontier(workspace, shared_data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "+ python" not in again.stdout and again.stdout.count("done already") == 3 * 5
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.json")} == stamps
    shutil.rmtree(root / "rift-beta10" / "eval" / "genetic")
    (root / "adv-beta10" / "cka-cls.json").unlink()
    (root / "standard" / "summary.json").unlink()  # as if killed after its last save: resumed, not redone
    third = run_frontier(workspace, shared_data)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("+ python") == 2 and "--attack genetic" in third.stdout
    assert f"+ python train.py --resume {root / 'standard'} --data-dir" in third.stdout
    assert (root / "standard" / "summary.json").is_file()
    assert "adv-beta10: linear CKA with the teacher" in third.stdout
    assert (root / "rift-beta10" / "eval" / "genetic" / "results.json").is_file()
    assert (root / "rift-beta10" / "summary.json").stat().st_mtime_ns == stamps[root / "rift-beta10" / "summary.json"]


@pytest.mark.slow
def test_frontier_table_only_writes_the_table_and_runs_nothing(frontier_done, workspace, shared_data, tmp_path):
    shutil.copyfile(workspace / "results" / "sst2-frontier.json", tmp_path / "sst2-frontier.json")
    result = run_cli("--smoke", "--table-only", "--runs", workspace / "frontier", "--results-dir", tmp_path,
                     "--data-dir", shared_data, script="experiments/frontier.py", cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+ python" not in result.stdout and "done already" not in result.stdout
    assert "3 of 3 runs finished" in (tmp_path / "sst2-frontier.md").read_text()


@pytest.mark.slow
def test_frontier_table_shows_unfinished_runs_as_missing(frontier_done, workspace, tmp_path):
    shutil.copytree(workspace / "frontier" / "standard", tmp_path / "runs" / "standard")
    rows = frontier.write_frontier(tmp_path / "runs", tmp_path / "results", frontier.FRONTIER)
    assert [r["name"] for r in rows] == [r["name"] for r in frontier.frontier_runs(frontier.FRONTIER)]
    assert "teacher_cka" in rows[0] and all("teacher_cka" not in r and "clean_accuracy" not in r for r in rows[1:])
    assert f"1 of {len(rows)} runs finished" in (tmp_path / "results" / "sst2-frontier.md").read_text()


def test_frontier_gaps_are_paired_differences_of_rift_and_adv_at_the_same_beta_and_seed(tmp_path):
    statuses = {"adv-beta1": ["failed", "successful", "skipped", "failed", "successful"],  # right after: 1 0 0 1 0
                "rift-beta1": ["failed", "failed", "successful", "failed", "failed"]}   # right after: 1 1 0 1 1
    for name, column in statuses.items():
        write_outcomes(tmp_path / name / "eval" / "pwws", dict(enumerate(column, start=10)))
    rows = [dict(name="adv-beta1", method="adv", beta=1.0, seed=42, against=None, clean_evaluation="pwws",
                 clean_accuracy=0.8, pwws_accuracy=0.4),
            dict(name="rift-beta1", method="rift", beta=1.0, seed=42, against="adv-beta1", clean_evaluation="pwws",
                 clean_accuracy=1.0, pwws_accuracy=0.8),
            dict(name="rift-beta1-seed43", method="rift", beta=1.0, seed=43, against="adv-beta1-seed43",
                 clean_evaluation="pwws", clean_accuracy=0.5),  # no adv of its seed
            dict(name="adv-beta3", method="adv", beta=3.0, seed=42, against=None, clean_accuracy=0.7)]  # no rift
    [gap] = frontier.frontier_gaps(tmp_path, rows, ["pwws", "genetic"])
    assert (gap["beta"], gap["seed"]) == (1.0, 42) and "genetic" not in gap and "run" not in gap
    # clean: differences 0 0 1 0 0, mean 0.2, sd sqrt(0.8 / 4); under attack: 0 1 0 0 1, mean 0.4, sd sqrt(1.2 / 4)
    assert gap["clean"] == pytest.approx(0.2) and gap["clean_se"] == pytest.approx(math.sqrt(0.2 / 5))
    assert gap["pwws"] == pytest.approx(0.4) and gap["pwws_se"] == pytest.approx(math.sqrt(0.3 / 5))


def test_search_overlap_compares_the_two_searches_on_the_sentences_both_attacked(tmp_path):
    statuses = {"pwws_counterfitted": {3: "failed", 4: "successful", 5: "failed", 6: "skipped", 7: "failed"},
                "genetic": {4: "failed", 5: "successful", 6: "skipped", 7: "failed", 8: "failed"}}  # 4..7 shared
    for name, outcomes in statuses.items():
        write_outcomes(tmp_path / "adv-beta1" / "eval" / name, outcomes)
    rows = [dict(name="adv-beta1", pwws_counterfitted_accuracy=0.6, genetic_accuracy=0.6),
            dict(name="rift-beta1", pwws_counterfitted_accuracy=0.5)]  # no genetic yet: no row
    [overlap] = frontier.search_overlap(tmp_path, rows)
    # on 4..7 PWWS holds 5 and 7, genetic holds 4 and 7: each flips one sentence the other does not
    assert overlap == {"run": "adv-beta1", "sentences": 4, "pwws_counterfitted": 0.5, "genetic": 0.5,
                       "only_pwws_flips": 1, "only_genetic_flips": 1}


def test_a_rewritten_frontier_keeps_the_hand_written_text(tmp_path):
    folder = tmp_path / "results"
    frontier.write_frontier(tmp_path / "runs", folder, frontier.FRONTIER)
    (folder / "sst2-frontier.md").write_text((folder / "sst2-frontier.md").read_text() + "\nThe discussion.\n")
    frontier.write_frontier(tmp_path / "runs", folder, frontier.FRONTIER)
    assert (folder / "sst2-frontier.md").read_text().endswith(f"{KEPT_TEXT}\n\nThe discussion.\n")
