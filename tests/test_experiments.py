"""bench.py results and frontier (experiments.py) and the toolkit they share with the studies
and parity (runner.py): the tables from finished run folders, the frontier end to end on a tiny
model, the report text taken from the settings, and the hand-written text a rewrite keeps."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

import experiments
import runner
from conftest import run_cli

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiments")


# ---------------------------------------------------------------------------------------------
# bench.py results


def fake_results_runs(root: Path) -> dict:
    """Finished run folders as `bench.py results` leaves them; returns the numbers put in them."""
    expected = {}
    for n, method in enumerate(experiments.METHODS):
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
        for k, (attack, synonyms) in enumerate(experiments.RESULTS_ATTACKS):
            under = 0.1 * (k + 1) + n / 100
            folder = run / "eval" / f"{attack}-{synonyms}"
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps({"environment": {"git_commit": "def456"},
                                                             "settings": {"attack": attack, "synonyms": synonyms}, "metrics": [
                {"attack": "none", "examples": 500, "clean_accuracy": clean},
                {"attack": attack, "synonyms": synonyms, "examples": 500, "clean_accuracy": clean,
                 "accuracy_under_attack": under, "attack_success_rate": 0.5, "words_perturbed_pct": 12.0,
                 "avg_queries": 99.0, "successful": 250, "failed": 150, "skipped": 100, "recheck_mismatches": 0,
                 "seconds_per_example": 0.2, "model_time_share": 0.9}]}))
            expected[(method, f"{attack}_{synonyms}")] = under
        pgd = [{"attack": "none", "examples": 500, "clean_accuracy": clean}]
        for eps in experiments.RESULTS["eps"]:
            pgd.append({"attack": f"pgd eps={eps:g}", "eps": eps, "examples": 500, "clean_accuracy": clean,
                        "accuracy_under_attack": clean - eps / 4, "seconds_per_example": 0.01})
            expected[(method, f"pgd_{eps:g}")] = clean - eps / 4
        (run / "eval" / "pgd" / "results.json").write_text(json.dumps({"environment": {"git_commit": "def789"},
                                                                       "settings": {"attack": "pgd"}, "metrics": pgd}))
        expected[(method, "clean_accuracy")] = clean
        expected[(method, "dev_accuracy")] = 0.7 + n / 100
    return expected


def test_write_results_builds_the_table_from_finished_runs(tmp_path, capsys):
    expected = fake_results_runs(tmp_path / "runs")
    experiments.write_results(tmp_path / "runs", tmp_path / "results")
    report = json.loads((tmp_path / "results" / "sst2-minilm.json").read_text())
    assert [row["method"] for row in report["table"]] == list(experiments.METHODS)
    for row in report["table"]:
        for (method, key), value in expected.items():
            if method == row["method"]:
                assert row[key] == pytest.approx(value), key
    evaluations = [f"{a}_{s}" for a, s in experiments.RESULTS_ATTACKS]
    assert set(report["table"][0]) == {"method", "dev_accuracy", "train_examples_per_s", "train_minutes",
                                       "clean_accuracy", *evaluations, "config", "resolved", "pgd_settings",
                                       *(f"{e}_settings" for e in evaluations)} | {
                                       f"pgd_{eps:g}" for eps in experiments.RESULTS["eps"]}
    for row in report["table"]:  # each run's whole training config and each evaluation's settings
        assert row["config"] == {"method": row["method"], "seed": 42} and row["resolved"] == {"max_length": 64}
        assert row["pgd_settings"] == {"attack": "pgd"}
        assert all(row[f"{a}_{s}_settings"] == {"attack": a, "synonyms": s} for a, s in experiments.RESULTS_ATTACKS)
    assert len(report["attack_details"]) == len(experiments.METHODS) * len(experiments.RESULTS_ATTACKS)
    assert report["environment"]["git_commit"] == "abc123"
    markdown = (tmp_path / "results" / "sst2-minilm.md").read_text()
    assert markdown.startswith("# SST-2") and "training abc123, evaluation def456, def789" in markdown and "Linux-test" in markdown
    assert "pwws/counterfitted" in markdown and f"pgd {experiments.RESULTS['eps'][-1]:g}" in markdown
    table = markdown[markdown.index("```") + 4:]
    rift_line = next(line for line in table.splitlines() if line.startswith("rift"))
    assert "0.72" in rift_line and "0.82" in rift_line and "0.32" in rift_line  # dev, clean, textfooler
    if HAS_MATPLOTLIB:
        assert (tmp_path / "results" / "sst2-minilm.png").stat().st_size > 0
    else:
        assert "no figure: plots need matplotlib" in capsys.readouterr().out

def test_the_results_page_states_the_settings_its_evaluations_recorded(tmp_path):
    fake_results_runs(tmp_path / "runs")
    for results in (tmp_path / "runs").glob("*/eval/*/results.json"):
        report = json.loads(results.read_text())
        report["settings"] |= {"max_modify_rate": 0.3 if "pwws" in str(results) else 1.0, "pgd_steps": 7,
                               "pgd_norm": "linf", "min_words": 5}
        results.write_text(json.dumps(report))
    experiments.write_results(tmp_path / "runs", tmp_path / "results")
    markdown = (tmp_path / "results" / "sst2-minilm.md").read_text()
    assert "at most 30% of the words changed / no cap on the words changed" in markdown
    assert "PGD takes 7 steps" in markdown and "LINF radius" in markdown and "at least 5 words" in markdown


def test_an_unfinished_evaluation_is_named_and_no_table_is_written(tmp_path):
    fake_results_runs(tmp_path / "runs")
    pgd = tmp_path / "runs" / "sst2-adv" / "eval" / "pgd" / "results.json"
    pgd.write_text(json.dumps(json.loads(pgd.read_text()) | {"complete": False}))
    with pytest.raises(experiments.UsageError, match="sst2-adv/eval/pgd"):
        experiments.write_results(tmp_path / "runs", tmp_path / "results")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------
# bench.py frontier



def frontier(workspace, shared_data):
    return run_cli("frontier", "--smoke", "--runs", workspace / "frontier", "--results-dir", workspace / "results",
                   "--data-dir", shared_data, script="bench.py", cache=workspace / "cache", timeout=900)


@pytest.fixture(scope="module")
def frontier_done(workspace, shared_data):
    result = frontier(workspace, shared_data)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_frontier_trains_attacks_and_measures_every_run_and_writes_the_table(frontier_done, workspace):
    runs = experiments.frontier_runs(experiments.FRONTIER_SMOKE)
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
    again = frontier(workspace, shared_data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "+ python" not in again.stdout and again.stdout.count("done already") == 3 * 5
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.json")} == stamps
    shutil.rmtree(root / "rift-beta10" / "eval" / "genetic")
    (root / "adv-beta10" / "cka-cls.json").unlink()
    (root / "standard" / "summary.json").unlink()  # as if killed after its last save: resumed, not redone
    third = frontier(workspace, shared_data)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("+ python") == 2 and "--attack genetic" in third.stdout
    assert f"+ python train.py --resume {root / 'standard'} --data-dir" in third.stdout
    assert (root / "standard" / "summary.json").is_file()
    assert "adv-beta10: linear CKA with the teacher" in third.stdout
    assert (root / "rift-beta10" / "eval" / "genetic" / "results.json").is_file()
    assert (root / "rift-beta10" / "summary.json").stat().st_mtime_ns == stamps[root / "rift-beta10" / "summary.json"]


@pytest.mark.slow
def test_frontier_table_only_writes_the_table_and_runs_nothing(frontier_done, workspace, shared_data, tmp_path):
    result = run_cli("frontier", "--smoke", "--table-only", "--runs", workspace / "frontier", "--results-dir", tmp_path,
                     "--data-dir", shared_data, script="bench.py", cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+ python" not in result.stdout and "done already" not in result.stdout
    assert "3 of 3 runs finished" in (tmp_path / "sst2-frontier.md").read_text()


@pytest.mark.slow
def test_frontier_table_shows_unfinished_runs_as_missing(frontier_done, workspace, tmp_path):
    shutil.copytree(workspace / "frontier" / "standard", tmp_path / "runs" / "standard")
    rows = experiments.write_frontier(tmp_path / "runs", tmp_path / "results", experiments.FRONTIER)
    assert [r["name"] for r in rows] == [r["name"] for r in experiments.frontier_runs(experiments.FRONTIER)]
    assert "teacher_cka" in rows[0] and all("teacher_cka" not in r and "clean_accuracy" not in r for r in rows[1:])
    assert f"1 of {len(rows)} runs finished" in (tmp_path / "results" / "sst2-frontier.md").read_text()


def write_outcomes(folder: Path, statuses: dict[int, str]) -> None:
    """An evaluation's adversarial.jsonl with only what the frontier tables read: test index -> status."""
    folder.mkdir(parents=True)
    (folder / "adversarial.jsonl").write_text("".join(json.dumps({"index": i, "status": s}) + "\n" for i, s in statuses.items()))


def test_frontier_gaps_are_paired_differences_of_rift_and_adv_on_the_same_sentences(tmp_path):
    statuses = {"adv-beta1": ["failed", "successful", "skipped", "failed", "successful"],  # right after: 1 0 0 1 0
                "rift-beta1": ["failed", "failed", "successful", "failed", "failed"]}   # right after: 1 1 0 1 1
    for name, column in statuses.items():
        write_outcomes(tmp_path / name / "eval" / "pwws", dict(enumerate(column, start=10)))
    rows = [dict(name="adv-beta1", method="adv", beta=1.0, seed=42, clean_accuracy=0.8, pwws_accuracy=0.4),
            dict(name="rift-beta1", method="rift", beta=1.0, seed=42, clean_accuracy=1.0, pwws_accuracy=0.8),
            dict(name="rift-beta1-seed43", method="rift", beta=1.0, seed=43, clean_accuracy=0.5),  # no adv of its seed
            dict(name="adv-beta3", method="adv", beta=3.0, seed=42, clean_accuracy=0.7)]  # no rift at its beta
    [gap] = experiments.frontier_gaps(tmp_path, rows)
    assert (gap["beta"], gap["seed"]) == (1.0, 42) and "genetic" not in gap
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
    [overlap] = experiments.search_overlap(tmp_path, rows)
    # on 4..7 PWWS holds 5 and 7, genetic holds 4 and 7: each flips one sentence the other does not
    assert overlap == {"run": "adv-beta1", "sentences": 4, "pwws_counterfitted": 0.5, "genetic": 0.5,
                       "only_pwws_flips": 1, "only_genetic_flips": 1}

# ---------------------------------------------------------------------------------------------
# runner.py: one check per artefact, and the page writer that keeps the hand-written text


def test_a_rewritten_page_keeps_the_text_below_the_marker(tmp_path):
    page = tmp_path / "results" / "table.md"
    runner.write_page(page, "# Table\n\n```\n1 2\n```\n")
    assert page.read_text() == f"# Table\n\n```\n1 2\n```\n\n{runner.KEPT_TEXT}\n"
    page.write_text(page.read_text() + "\nWhy the numbers are so.\n\n## More\n\nkept too\n")
    runner.write_page(page, "# Table\n\n```\n3 4\n```\n")
    assert page.read_text() == f"# Table\n\n```\n3 4\n```\n\n{runner.KEPT_TEXT}\n\nWhy the numbers are so.\n\n" \
                               "## More\n\nkept too\n"
    again = page.read_text()
    runner.write_page(page, "# Table\n\n```\n3 4\n```\n")
    assert page.read_text() == again  # rewriting the same tables changes nothing


def test_a_page_without_the_marker_is_replaced_whole(tmp_path):
    page = tmp_path / "old.md"
    page.write_text("# Old\n\nan old generated page\n")
    runner.write_page(page, "# New\n")
    assert page.read_text() == f"# New\n\n{runner.KEPT_TEXT}\n"


@pytest.mark.parametrize("write", ["results", "frontier"])
def test_every_generator_keeps_the_hand_written_text(write, tmp_path):
    folder = tmp_path / "results"
    if write == "results":
        fake_results_runs(tmp_path / "runs")
        generate, name = (lambda: experiments.write_results(tmp_path / "runs", folder)), "sst2-minilm.md"
    else:
        generate, name = (lambda: experiments.write_frontier(tmp_path / "runs", folder, experiments.FRONTIER)), \
            "sst2-frontier.md"
    generate()
    (folder / name).write_text((folder / name).read_text() + "\nThe discussion.\n")
    generate()
    assert (folder / name).read_text().endswith(f"{runner.KEPT_TEXT}\n\nThe discussion.\n")


def test_the_finished_checks_read_what_train_py_and_evaluate_py_leave(tmp_path):
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    assert runner.trained(run) is None and not runner.training_resumable(run) and runner.training_log(run) == []
    (run / "last" / "training_state.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 1, "dev_accuracy": 0.5}\n')
    assert runner.training_resumable(run) and [line["step"] for line in runner.training_log(run)] == [1, 1]
    (run / "summary.json").write_text('{"best_dev_accuracy": 0.5}')
    assert runner.trained(run) == {"best_dev_accuracy": 0.5}
    evaluation = run / "eval" / "pwws"
    assert not runner.evaluation_started(evaluation) and runner.evaluated(evaluation) is None
    evaluation.mkdir(parents=True)
    (evaluation / "results.json").write_text('{"complete": false}')
    assert runner.evaluation_started(evaluation) and runner.evaluated(evaluation) is None
    (evaluation / "results.json").write_text('{"complete": true, "metrics": []}')
    assert runner.evaluated(evaluation) == {"complete": True, "metrics": []}
    assert runner.measured_cka(run, "cls") is None
    runner.cka_path(run, "cls").write_text('{"linear_cka": 0.25}')
    assert runner.measured_cka(run, "cls") == 0.25


def test_the_words_of_a_report_come_from_the_recorded_settings():
    assert runner.words_changed([{"max_modify_rate": 1.0}, None, {"max_modify_rate": 1.0}]) == "no cap on the words changed"
    assert runner.words_changed([{"max_modify_rate": 0.3}]) == "at most 30% of the words changed"
    assert "default" in runner.words_changed([None, {}])
    assert runner.recorded([{"ascc_steps": 10}, None, {"ascc_steps": 5}], "ascc_steps", "-") == "10 / 5"
    assert runner.recorded([None], "ascc_steps", "train.py's default") == "train.py's default"


def test_a_run_keeps_the_records_of_what_finished_and_none_of_its_checkpoints(tmp_path):
    run, kept = tmp_path / "runs" / "rift", tmp_path / "results" / "study" / "rift"
    for name in ("config.json", "metrics.jsonl", "best/model.safetensors", "last/training_state.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    runner.copy_records(run, kept)
    assert not kept.exists()  # training has not finished: nothing to keep
    (run / "summary.json").write_text('{"best_dev_accuracy": 0.5}')
    runner.cka_path(run, "mean").write_text('{"linear_cka": 0.25}')
    for name, complete in (("ascc", "true"), ("pwws", "false")):
        write_outcomes(run / "eval" / name, {3: "failed"})
        (run / "eval" / name / "results.json").write_text(f'{{"complete": {complete}}}')
    runner.copy_records(run, kept)
    assert sorted(str(path.relative_to(kept)) for path in kept.rglob("*") if path.is_file()) == [
        "cka-mean.json", "config.json", "eval/ascc/adversarial.jsonl", "eval/ascc/results.json", "metrics.jsonl",
        "summary.json"]
    restored = tmp_path / "fresh" / "rift"
    runner.copy_records(kept, restored)  # a machine without runs/: the run reads as finished again
    assert runner.trained(restored) == {"best_dev_accuracy": 0.5} and runner.measured_cka(restored, "mean") == 0.25
    assert runner.example_outcomes(restored / "eval" / "ascc") == {3: (1, 1)}


# ---------------------------------------------------------------------------------------------
# bench.py plot


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: bench.py plot's error is tested instead")
@pytest.mark.parametrize("log_pulls", [False, True])
def test_the_training_plot_draws_the_pulls_where_the_run_logged_them(tmp_path, log_pulls):
    pulls = {"pull_ce": 0.3, "pull_kl": 0.2, "pull_mi": 0.9, "cos_ce_kl": 0.1, "cos_ce_mi": 0.0, "cos_kl_mi": -0.1}
    lines = [{"step": step, "loss": 1.0, "ce": 0.7, "kl": 0.01, "mi_nce": 2.0, "mi_bound": 0.5,
              **(pulls if log_pulls else {})} for step in (1, 2, 3)] + [{"step": 3, "dev_accuracy": 0.6}]
    (tmp_path / runner.TRAINING_LOG).write_text("".join(json.dumps(line) + "\n" for line in lines))
    drawn = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiments, "save_figure", lambda figure, path: (
            drawn.append([axis.get_title() for axis in figure.axes]), experiments.pyplot().close(figure)))
        experiments.plot_run(tmp_path)
    assert len(drawn[0]) == (5 if log_pulls else 3)
    assert any("gradient norm" in title for title in drawn[0]) == log_pulls
