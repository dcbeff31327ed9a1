"""The paper's settings as a user runs them: train.py --adversary ascc and --preset, and
evaluate.py --protocol paper, end to end on a tiny model."""

import json
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_paper_protocol_runs_pwws_and_genetic_with_the_counterfitted_table(ascc_run, shared_data, workspace):
    out = workspace / "protocol"
    result = run_cli("--checkpoint", ascc_run, "--protocol", "paper", "--num-examples", 4, "--population", 4,
                     "--generations", 2, "--data-dir", shared_data, "--out", out, script="evaluate.py",
                     cache=workspace / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["protocol"] == "paper"
    assert [(m["attack"], m.get("synonyms")) for m in report["metrics"]] == \
        [("none", None), ("pwws", "counterfitted"), ("genetic", "counterfitted"), ("worst case", None)]
    assert all(m["examples"] == 4 for m in report["metrics"])
