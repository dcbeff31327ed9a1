"""The paper's settings as a user runs them: train.py --adversary ascc and --preset, evaluate.py
--protocol paper, and bench.py frontier (the comparison runner) end to end on a tiny model."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

import attacks
import evaluate
import train
from conftest import run_cli
from data import Example


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paper")


@pytest.fixture(scope="module")
def ascc_run(tiny_model, shared_data, workspace) -> Path:
    out = workspace / "ascc-run"
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "rift",
                     "--adversary", "ascc", "--ascc-steps", 2, "--max-train-examples", 64, "--batch-size", 8,
                     "--max-steps", 2, "--max-length", 32, "--log-every", 1, "--out", out, cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_an_ascc_run_records_its_adversary_and_neighbour_table(ascc_run, shared_data):
    config = json.loads((ascc_run / "config.json").read_text())
    assert config["config"]["adversary"] == "ascc" and config["config"]["ascc_steps"] == 2
    ascc = config["resolved"]["ascc"]
    assert ascc["path"] == str(shared_data / "synonyms" / "counterfitted_neighbors.json")
    assert ascc["vocabulary_words_with_neighbours"] > 10_000 and 1 <= ascc["mean_neighbours_of_those"] <= 8
    lines = [json.loads(line) for line in (ascc_run / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert len(steps) == 2 and all(line["kl"] >= 0 and line["mi_nce"] > 0 for line in steps)
    assert json.loads((ascc_run / "summary.json").read_text())["adversary"] == "ascc"


# ---------------------------------------------------------------------------------------------
# Presets and protocols set defaults; flags given explicitly win


def test_paper_presets_set_the_papers_settings():
    imdb, snli = train.parse_args(["--preset", "paper-imdb"]), train.parse_args(["--preset", "paper-snli"])
    assert (imdb.task, imdb.model, imdb.max_length, imdb.batch_size, imdb.epochs, imdb.alpha, imdb.beta, imdb.lr,
            imdb.adversary) == ("imdb", "bert-base-uncased", 300, 32, 20.0, 0.1, 10.0, 2e-5, "ascc")
    assert (snli.task, snli.model, snli.max_length, snli.batch_size, snli.epochs, snli.alpha, snli.beta, snli.lr,
            snli.adversary) == ("snli", "bert-base-uncased", 80, 120, 20.0, 0.7, 5.0, 2e-5, "ascc")
    assert imdb.method == "rift" and imdb.weight_decay == 2e-4
    assert train.parse_args([]).adversary == "pgd" and train.parse_args([]).preset is None


def test_flags_given_explicitly_win_over_the_preset():
    cfg = train.parse_args(["--beta", "3", "--preset", "paper-imdb", "--model", "my-model"])
    assert (cfg.beta, cfg.model, cfg.alpha, cfg.task) == (3.0, "my-model", 0.1, "imdb")


def test_the_snli_preset_runs_on_any_model_and_is_recorded(tiny_model, shared_data, workspace):
    dev = workspace / "snli-dev.tsv"
    dev.write_text("\n".join((shared_data / "snli" / "dev.tsv").read_text().splitlines()[:31]) + "\n")
    out = workspace / "preset-run"
    result = run_cli("--preset", "paper-snli", "--model", tiny_model, "--data-dir", shared_data,
                     "--train-file", shared_data / "snli" / "train_subset.tsv", "--dev-file", dev,
                     "--max-train-examples", 60, "--batch-size", 6, "--max-steps", 1, "--ascc-steps", 1, "--out", out,
                     cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["preset"] == "paper-snli" and config["config"]["adversary"] == "ascc"
    assert (config["config"]["alpha"], config["config"]["beta"], config["resolved"]["max_length"]) == (0.7, 5.0, 80)
    assert config["resolved"]["labels"] == ["entailment", "neutral", "contradiction"]


def test_paper_protocol_sets_the_papers_evaluation_and_flags_win():
    args = evaluate.parse_args(["--protocol", "paper"])
    assert (args.attack, args.synonyms, args.num_examples, args.population, args.generations, args.split) == \
        ("paper", "counterfitted", 1000, 60, 40, "test")
    assert evaluate.ATTACKS["paper"] == ["pwws", "genetic"]
    assert evaluate.parse_args(["--protocol", "paper", "--num-examples", "5"]).num_examples == 5
    assert evaluate.parse_args([]).attack == "synonym"


def test_textdefender_protocol_sets_its_budget_cap_examples_rule_and_candidates():
    args = evaluate.parse_args(["--protocol", "textdefender"])
    assert (args.query_budget, args.max_modify_rate, args.num_examples, args.seed, args.split) == ("50x", 0.3, 1000, 42, "test")
    assert (args.synonyms, args.neighbours, args.min_cos) == ("counterfitted-vectors", 50, 0.0)
    assert (args.min_words, args.length_rule) == (5, "textdefender")  # len(text_a.split(' ')) > 4
    assert evaluate.parse_args(["--protocol", "textdefender", "--query-budget", "20"]).query_budget == 20


def test_query_budget_takes_a_number_of_texts_or_a_number_per_word():
    assert evaluate.parse_args(["--query-budget", "7"]).query_budget == 7
    assert evaluate.parse_args(["--query-budget", "50x"]).query_budget == "50x"
    assert evaluate.parse_args(["--query-budget", "050x"]).query_budget == "50x"
    assert evaluate.parse_args([]).query_budget is None


def test_the_length_rules_count_as_textattack_and_as_textdefender():
    """TextDefender keeps len(text_a.split(' ')) > 4: space-separated tokens, punctuation included,
    of the first text (the premise of a pair); rift's default counts TextAttack's words of the
    attacked text."""
    short = Example(tuple("a film , truly .".split()), 0)  # 5 tokens, 3 words
    pair = Example(("yes",), 0, context="a man is on a horse")
    words, textdefender = attacks.LENGTH_RULES["words"], attacks.LENGTH_RULES["textdefender"]
    assert (words(short), textdefender(short)) == (3, 5)
    assert (words(pair), textdefender(pair)) == (1, 6)


def test_paper_protocol_runs_pwws_and_genetic_with_the_counterfitted_table(ascc_run, shared_data, workspace):
    out = workspace / "protocol"
    result = run_cli("--checkpoint", ascc_run, "--protocol", "paper", "--num-examples", 4, "--population", 4,
                     "--generations", 2, "--data-dir", shared_data, "--out", out, script="evaluate.py",
                     cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["protocol"] == "paper"
    assert [(m["attack"], m.get("synonyms")) for m in report["metrics"]] == \
        [("none", None), ("pwws", "counterfitted"), ("genetic", "counterfitted")]
    assert all(m["examples"] == 4 for m in report["metrics"])


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


def test_frontier_trains_attacks_and_measures_every_run_and_writes_the_table(frontier_done, workspace):
    import experiments
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


def test_frontier_table_only_writes_the_table_and_runs_nothing(frontier_done, workspace, shared_data, tmp_path):
    result = run_cli("frontier", "--smoke", "--table-only", "--runs", workspace / "frontier", "--results-dir", tmp_path,
                     "--data-dir", shared_data, script="bench.py", cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+ python" not in result.stdout and "done already" not in result.stdout
    assert "3 of 3 runs finished" in (tmp_path / "sst2-frontier.md").read_text()


def test_frontier_table_shows_unfinished_runs_as_missing(frontier_done, workspace, tmp_path):
    import experiments
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
    import experiments
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
    import experiments
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
