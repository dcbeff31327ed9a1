"""evaluate.py as a user runs it: a tiny checkpoint trained by train.py on SST-2, attacked with
every attack and both synonym sources; bad inputs; plots; resuming; torchrun."""

import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attacks
import data
import synonyms
from conftest import REPO, assert_one_line_error, run_cli
from synonyms import NLTK_STOPWORDS

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
WORD_ATTACKS = ("pwws", "textfooler", "genetic", "deepwordbug")
NONE_KEYS = {"attack", "examples", "clean_accuracy"}
WORD_KEYS = {"attack", "synonyms", "examples", "clean_accuracy", "accuracy_under_attack", "attack_success_rate",
             "words_perturbed_pct", "mean_similarity", "avg_queries", "avg_model_calls", "successful", "failed", "skipped",
             "recheck_mismatches", "fp32_reruns", "seconds_per_example", "model_time_share"}
PGD_KEYS = WORD_KEYS - {"synonyms"} | {"eps"}  # PGD changes no word: its words_perturbed_pct is None
LINE_KEYS = {"attack", "index", "status", "label", "context", "original", "perturbed", "changed", "words",
             "pred_before", "pred_after", "probs_before", "probs_after", "queries", "model_calls", "seconds", "recheck_mismatch",
             "fp32_rerun", "similarity", "changed_share"}
HEADINGS = ["attack", "synonyms", "clean %", "robust %", "success %", "changed %", "queries", "s/example"]


def evaluate(*args, cache):
    return run_cli(*args, script="evaluate.py", cache=cache)


def run_in(cwd: Path, script: str, *args, cache: Path):
    """A command line run from another folder, the script named by its absolute path."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "RIFT_CACHE": str(cache)}
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def cache(workspace) -> Path:
    return workspace / "cache"  # WordNet's copy is made here once, not in the user's cache


@pytest.fixture(scope="module")
def tiny_run(tiny_model, shared_data, workspace, cache) -> Path:
    out = workspace / "run"
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "standard",
                     "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4, "--max-length", 32,
                     "--seed", 3, "--out", out, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def attacked(tiny_run, shared_data, workspace, cache) -> dict:
    """--attack all with each synonym source: (the process, its results folder)."""
    runs = {}
    for synonyms in ("wordnet", "counterfitted"):
        args = ["--checkpoint", tiny_run, "--attack", "all", "--num-examples", 6, "--eps", 0.5, "--pgd-steps", 2,
                "--population", 6, "--generations", 2, "--synonyms", synonyms, "--data-dir", shared_data]
        if synonyms == "counterfitted":
            args += ["--out", workspace / "counterfitted"]
        result = evaluate(*args, cache=cache)
        assert result.returncode == 0, result.stderr[-3000:]
        if synonyms == "wordnet":  # the default folder: <run>/eval/<attack>-<synonyms>-<time>
            folders = list((tiny_run / "eval").glob("all-wordnet-*"))
            assert len(folders) == 1
            runs[synonyms] = (result, folders[0])
        else:
            runs[synonyms] = (result, workspace / "counterfitted")
    return runs


def read_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "adversarial.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# What an evaluation writes


@pytest.mark.slow
@pytest.mark.parametrize("synonyms", ["wordnet", "counterfitted"])
def test_all_attacks_write_results_with_settings_indices_and_metrics(attacked, synonyms, tiny_run):
    result, folder = attacked[synonyms]
    results = json.loads((folder / "results.json").read_text())
    settings = results["settings"]
    assert settings["attack"] == "all" and settings["synonyms"] == synonyms and settings["num_examples"] == 6
    assert settings["eps"] == [0.5] and settings["population"] == 6 and settings["seed"] == 42
    assert results["resolved"]["model"] == str(tiny_run / "best") and results["resolved"]["task"] == "sst2"
    assert results["resolved"]["max_length"] == 32  # the run's, not the task's 64
    assert results["resolved"]["synonym_source"]["synonyms"] == synonyms
    indices = results["indices"]
    assert len(indices) == 6 and len(set(indices)) == 6 and all(isinstance(i, int) for i in indices)
    rows = {row["attack"]: row for row in results["metrics"]}
    assert list(rows) == ["none", *WORD_ATTACKS, "worst case", "pgd eps=0.5"]
    assert set(rows["none"]) == NONE_KEYS and rows["none"]["examples"] == 6
    for attack in WORD_ATTACKS:
        row = rows[attack]
        assert set(row) == WORD_KEYS, set(row) ^ WORD_KEYS
        assert row["synonyms"] == ("characters" if attack == "deepwordbug" else synonyms) and row["examples"] == 6
        assert row["successful"] + row["failed"] + row["skipped"] == 6
        assert row["clean_accuracy"] == pytest.approx(rows["none"]["clean_accuracy"])
        assert row["recheck_mismatches"] == 0
        assert 0 <= row["accuracy_under_attack"] <= row["clean_accuracy"]
        assert 0 < row["model_time_share"] <= 1
    pgd = rows["pgd eps=0.5"]
    assert set(pgd) == PGD_KEYS and pgd["eps"] == 0.5 and pgd["words_perturbed_pct"] is None
    assert pgd["clean_accuracy"] == rows["none"]["clean_accuracy"] and pgd["successful"] + pgd["failed"] + pgd["skipped"] == 6


@pytest.mark.slow
def test_the_same_seed_draws_the_same_examples_and_none_shorter_than_four_words(attacked, shared_data):
    indices = [json.loads((attacked[s][1] / "results.json").read_text())["indices"] for s in attacked]
    assert indices[0] == indices[1]
    test = data.load_split(data.TASKS["sst2"], "test", str(shared_data))
    assert all(attacks.word_count(test[i].words) >= 4 for i in indices[0])
    assert any(attacks.word_count(ex.words) < 4 for ex in test)  # the filter has something to leave out


@pytest.mark.slow
@pytest.mark.parametrize("synonyms", ["wordnet", "counterfitted"])
def test_adversarial_jsonl_has_one_line_per_example_per_word_attack_consistent_with_the_metrics(attacked, synonyms):
    _, folder = attacked[synonyms]
    results = json.loads((folder / "results.json").read_text())
    rows = {row["attack"]: row for row in results["metrics"]}
    lines = read_lines(folder)
    assert len(lines) == 6 * (len(WORD_ATTACKS) + 1)
    assert all(line["perturbed"] == line["original"] and not line["changed"]
               for line in lines if line["attack"] == "pgd eps=0.5")  # PGD moves embeddings, not words
    for attack in WORD_ATTACKS:
        mine = [line for line in lines if line["attack"] == attack]
        assert sorted(line["index"] for line in mine) == sorted(results["indices"])  # as they finish
        for line in mine:
            assert set(line) == LINE_KEYS
            words = line["original"].split()
            assert line["words"] == attacks.word_count(words) >= 4
            assert line["pred_before"] == max(range(2), key=lambda c: line["probs_before"][c])
            assert line["pred_after"] == max(range(2), key=lambda c: line["probs_after"][c])
            assert (line["status"] == "skipped") == (line["pred_before"] != line["label"])
            if line["status"] == "successful":
                assert line["pred_after"] != line["label"] and line["changed"]
            if line["status"] == "skipped":
                assert line["perturbed"] == line["original"] and line["queries"] == 1
            assert line["queries"] >= 1
            assert line["recheck_mismatch"] is False and line["fp32_rerun"] is False and line["context"] is None
        counts = {s: sum(line["status"] == s for line in mine) for s in ("successful", "failed", "skipped")}
        assert counts == {s: rows[attack][s] for s in counts}
        attacked_lines = [line for line in mine if line["status"] != "skipped"]
        if attacked_lines:
            assert rows[attack]["avg_queries"] == pytest.approx(
                sum(line["queries"] for line in attacked_lines) / len(attacked_lines))
        assert rows[attack]["accuracy_under_attack"] == pytest.approx(counts["failed"] / 6)


@pytest.fixture
def synonym_sources(attacked, shared_data, cache, monkeypatch):
    """The two synonym functions the runs used, loaded here: WordNet from the runs' cache copy."""
    monkeypatch.setattr(synonyms, "CACHE", cache)
    import nltk
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # load_wordnet adds the copy's folder
    counterfitted, _ = synonyms.counterfitted_synonyms(data_dir=str(shared_data))
    return {"wordnet": synonyms.wordnet_synonyms()[0], "counterfitted": counterfitted}


@pytest.mark.slow
@pytest.mark.parametrize("synonyms", ["wordnet", "counterfitted"])
def test_cli_changes_are_synonyms_of_words_within_the_cap(attacked, synonym_sources, synonyms):
    synonym = synonym_sources[synonyms]
    rate = json.loads((attacked[synonyms][1] / "results.json").read_text())["settings"]["max_modify_rate"]
    changed_any = 0
    for line in read_lines(attacked[synonyms][1]):
        original, perturbed = tuple(line["original"].split()), tuple(line["perturbed"].split())
        assert len(original) == len(perturbed)
        slots = attacks.slots(original)
        assert line["changed"] == [n for n, slot in enumerate(slots)
                                   if attacks.word_at(original, slot) != attacks.word_at(perturbed, slot)]
        assert len(line["changed"]) <= math.floor(rate * line["words"])
        assert len(line["changed"]) == len(set(line["changed"]))
        if line["attack"] == "deepwordbug":  # character edits, no synonyms: within the edit distance
            assert attacks.edit_distance(line["original"], line["perturbed"]) <= 30
            continue
        options = attacks.substitutions(original, synonym)
        for n in line["changed"]:
            old, new = attacks.word_at(original, slots[n]), attacks.word_at(perturbed, slots[n])
            assert new in options.get(slots[n], []) and new in synonym(old), (old, new)
            changed_any += 1
    assert changed_any > 0  # at least one attack changed something


@pytest.mark.slow
@pytest.mark.parametrize("synonyms", ["wordnet", "counterfitted"])
def test_cli_never_changes_a_stopword_or_punctuation_token(attacked, synonyms):
    for line in read_lines(attacked[synonyms][1]):
        original = tuple(line["original"].split())
        slots = attacks.slots(original)
        for n in line["changed"]:
            assert attacks.word_at(original, slots[n]) not in NLTK_STOPWORDS, original[slots[n][0]]


@pytest.mark.slow
def test_summary_table_is_printed(attacked):
    for synonyms, (result, _) in attacked.items():
        out = result.stdout
        table = out[out.index("attack  "):]
        assert re.split(r"\s{2,}", table.splitlines()[0].strip()) == HEADINGS
        body = [line.split("  ")[0].strip() for line in table.splitlines()[2:] if line.strip()]
        assert body[:7] == ["none", "pwws", "textfooler", "genetic", "deepwordbug", "worst case", "pgd eps=0.5"]
        assert max(len(line) for line in table.splitlines()) <= 100  # no line wraps in a terminal
        assert f"-> {attacked[synonyms][1]}" in out or str(attacked[synonyms][1]) in out


@pytest.mark.slow
def test_genetic_population_and_generations_flags_reach_the_search(tiny_run, shared_data, tmp_path, monkeypatch):
    """evaluate.py --population/--generations are recorded in the settings; they must also be what
    the genetic search runs with (it defaults to 60 and 40)."""
    import evaluate
    calls = []
    original = attacks.SEARCHES["genetic"]

    def spy(*args, **kwargs):
        bound = inspect.signature(original).bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append((bound.arguments["population"], bound.arguments["generations"]))
        return original(*args, **kwargs)

    monkeypatch.setitem(attacks.SEARCHES, "genetic", spy)
    evaluate.main(evaluate.parse_args([
        "--checkpoint", str(tiny_run), "--attack", "genetic", "--num-examples", "6", "--population", "6",
        "--generations", "2", "--query-budget", "40", "--synonyms", "counterfitted", "--data-dir", str(shared_data),
        "--out", str(tmp_path / "out")]))
    assert calls, "no example was attacked"
    assert set(calls) == {(6, 2)}


# ---------------------------------------------------------------------------------------------
# Which model


@pytest.mark.slow
def test_a_plain_hugging_face_classifier_folder_with_a_task(tiny_run, shared_data, workspace, cache):
    out, plain = workspace / "plain", workspace / "hf-classifier"
    shutil.copytree(tiny_run / "best", plain)  # a model folder outside any run
    result = evaluate("--checkpoint", plain, "--task", "sst2", "--attack", "pwws", "--synonyms",
                      "counterfitted", "--num-examples", 3, "--data-dir", shared_data, "--out", out, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["resolved"]["model"] == str(plain) and results["resolved"]["task"] == "sst2"
    assert results["resolved"]["max_length"] == data.TASKS["sst2"].max_length  # no run: the task's
    assert [row["attack"] for row in results["metrics"]] == ["none", "pwws"]
    assert len(read_lines(out)) == 3


@pytest.mark.slow
def test_without_checkpoint_the_newest_run_under_runs_is_evaluated(tiny_run, shared_data, tmp_path, cache):
    for name, when in (("newer", 2_000_000_000), ("older", 1_000_000_000)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        shutil.copy(tiny_run / "config.json", run)
        shutil.copytree(tiny_run / "best", run / "best")
        os.utime(run / "best", (when, when))
    result = run_in(tmp_path, "evaluate.py", "--attack", "none", "--num-examples", 3, "--data-dir", shared_data,
                    cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = list((tmp_path / "runs" / "newer" / "eval").glob("none-wordnet-*"))
    assert len(folders) == 1 and not (tmp_path / "runs" / "older" / "eval").exists()
    results = json.loads((folders[0] / "results.json").read_text())
    assert results["resolved"]["model"] == str(Path("runs") / "newer" / "best")


@pytest.mark.slow
def test_without_checkpoint_and_without_runs_is_a_usage_error(tmp_path, cache):
    result = run_in(tmp_path, "evaluate.py", "--attack", "none", cache=cache)
    assert_one_line_error(result, "no run with a best/ checkpoint under runs/")


# ---------------------------------------------------------------------------------------------
# Bad inputs: non-zero exit, one line `error: ...`, no traceback


@pytest.mark.slow
def test_missing_checkpoint_folder(tmp_path, cache):
    result = evaluate("--checkpoint", tmp_path / "no-such-run", "--attack", "none", cache=cache)
    assert_one_line_error(result, "no-such-run")


@pytest.mark.slow
def test_checkpoint_with_the_wrong_number_of_classes(tiny_run, shared_data, tmp_path, cache):
    result = evaluate("--checkpoint", tiny_run, "--task", "snli", "--data-dir", shared_data, "--attack", "none",
                      "--out", tmp_path / "out", cache=cache)
    assert_one_line_error(result, "2 classes", "snli", "3")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_existing_non_empty_out_is_refused_and_left_untouched(tiny_run, shared_data, tmp_path, cache):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = evaluate("--checkpoint", tiny_run, "--attack", "none", "--num-examples", 2, "--data-dir", shared_data,
                      "--out", out, cache=cache)
    assert_one_line_error(result, str(out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_missing_synonyms_path(tiny_run, shared_data, tmp_path, cache):
    result = evaluate("--checkpoint", tiny_run, "--attack", "pwws", "--synonyms", "counterfitted", "--synonyms-path",
                      tmp_path / "nope.json", "--num-examples", 2, "--data-dir", shared_data, "--out", tmp_path / "out",
                      cache=cache)
    assert_one_line_error(result, "nope.json")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_similarity_threshold_outside_zero_to_one(tiny_classifier, cache):
    result = evaluate("--checkpoint", tiny_classifier, "--task", "sst2", "--similarity", "1.5", cache=cache)
    assert_one_line_error(result, "--similarity 1.5", "between 0 and 1")


@pytest.fixture(scope="module")
def foolable(workspace) -> Path:
    """The default model with a random head: unlike the tiny models, whose every prediction is the
    same, its predictions follow the words, so PWWS fools it."""
    from rift import DEFAULT_MODEL, load_classifier
    torch.manual_seed(0)
    model, tokenizer = load_classifier(DEFAULT_MODEL, num_labels=2)
    model.save_pretrained(workspace / "foolable")
    tokenizer.save_pretrained(workspace / "foolable")
    return workspace / "foolable"


@pytest.mark.slow
def test_the_meaning_check_is_recorded_with_each_successs_similarity_also_when_resumed(
        foolable, shared_data, tmp_path, cache):
    """--similarity reaches results.json; every success has its similarity to the original and its
    share of changed words, their mean in the row. The lines a killed evaluation wrote (without
    them: they are measured once all lines are in) get them when it is resumed."""
    out = tmp_path / "out"
    result = evaluate("--checkpoint", foolable, "--task", "sst2", "--attack", "pwws", "--num-examples", 10, "--synonyms",
                      "counterfitted", "--similarity", 0.5, "--similarity-window", 5, "--data-dir", shared_data, "--out",
                      out, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert (results["settings"]["similarity"], results["settings"]["similarity_window"]) == (0.5, 5)
    assert results["resolved"]["sentence_model"].endswith("model")
    lines = read_lines(out)
    successes = [line for line in lines if line["status"] == "successful"]
    assert successes and all(set(line) == LINE_KEYS | {"attack", "index"} for line in lines)
    for line in lines:
        if line["status"] == "successful":
            assert 0 < line["similarity"] <= 1 and line["changed_share"] == len(line["changed"]) / line["words"]
        else:
            assert line["similarity"] is None and line["changed_share"] is None
    row = next(row for row in results["metrics"] if row["attack"] == "pwws")
    assert row["mean_similarity"] == pytest.approx(sum(line["similarity"] for line in successes) / len(successes))

    (out / "results.json").write_text(json.dumps(results | {"metrics": None, "complete": False}))
    kept = [{k: v for k, v in line.items() if k not in ("similarity", "changed_share")} for line in lines[:3]]
    (out / "adversarial.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))
    result = evaluate("--resume", out, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["complete"] and resumed["settings"]["similarity"] == 0.5
    again = read_lines(out)
    assert [{k: v for k, v in line.items() if k not in ("similarity", "changed_share")} for line in again[:3]] == kept
    for line, before in zip(again, lines):
        assert line["changed_share"] == before["changed_share"]
        assert line["similarity"] == pytest.approx(before["similarity"], abs=1e-6) if before["similarity"] else \
            line["similarity"] is None


# ---------------------------------------------------------------------------------------------
# Plots: matplotlib is an optional extra


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: the error path is tested instead")
def test_plot_draws_robustness_curves(tiny_run, shared_data, tmp_path, cache):
    result = evaluate("--checkpoint", tiny_run, "--attack", "all", "--synonyms", "counterfitted", "--num-examples", 3,
                      "--eps", 0.5, "--pgd-steps", 1, "--query-budget", 20, "--data-dir", shared_data,
                      "--out", tmp_path / "out", "--plot", cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "robustness.png").stat().st_size > 0


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: the error path is tested instead")
def test_a_saved_figure_is_closed(tmp_path):
    """A study redraws its figure after every attack: figures left open pile up in pyplot."""
    import cli

    plt = cli.pyplot()
    figure, _ = plt.subplots()
    cli.save_figure(figure, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0 and not plt.fignum_exists(figure.number)


@pytest.mark.slow
@pytest.mark.skipif(HAS_MATPLOTLIB, reason="matplotlib is installed: the plot itself is tested instead")
def test_plot_without_matplotlib_fails_first_naming_the_extra_requirements(tiny_run, shared_data, tmp_path, cache):
    result = evaluate("--checkpoint", tiny_run, "--attack", "pwws", "--num-examples", 2, "--data-dir", shared_data,
                      "--out", tmp_path / "out", "--plot", cache=cache)
    assert_one_line_error(result, "matplotlib", "requirements-extra.txt")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Which model, continued: run folders named by their best/, plain folders need a task


@pytest.mark.slow
def test_a_runs_best_folder_is_evaluated_as_that_run(tiny_run, shared_data, workspace, cache):
    out = workspace / "via-best"
    result = evaluate("--checkpoint", tiny_run / "best", "--attack", "none", "--num-examples", 3,
                      "--data-dir", shared_data, "--out", out, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = json.loads((out / "results.json").read_text())["resolved"]
    assert resolved["task"] == "sst2" and resolved["max_length"] == 32  # the run's settings, not a default task's


@pytest.mark.slow
def test_a_plain_model_folder_without_task_is_a_usage_error(tiny_run, workspace, cache):
    plain = workspace / "plain-no-task"
    shutil.copytree(tiny_run / "best", plain)
    assert_one_line_error(evaluate("--checkpoint", plain, "--attack", "none", cache=cache), "--task")


@pytest.mark.slow
def test_a_pre_trained_encoder_without_a_trained_head_is_refused(tiny_model, shared_data, tmp_path, cache):
    """transformers would put a random head on it, and its 'robustness' would be that head's."""
    result = evaluate("--checkpoint", tiny_model, "--task", "sst2", "--attack", "none", "--data-dir", shared_data,
                      "--out", tmp_path / "out", cache=cache)
    assert_one_line_error(result, "no trained classification head", "fine-tune it with train.py first")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_corrupt_run_configuration_is_a_usage_error(tiny_run, tmp_path, cache):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "best", run / "best")
    (run / "config.json").write_text("{not json")
    assert_one_line_error(evaluate("--checkpoint", run, "--attack", "none", cache=cache), "config.json")


@pytest.mark.parametrize("flag,value", [("--max-modify-rate", "1.5"), ("--num-examples", "0"),
                                        ("--eps", "-0.1"), ("--batch-size", "0"), ("--query-budget", "0"),
                                        ("--query-budget", "0x"), ("--query-budget", "1.5x"), ("--query-budget", "x"),
                                        ("--query-budget", "50xx"), ("--eps", "nan"), ("--min-cos", "nan"),
                                        ("--max-modify-rate", "nan")])
def test_out_of_range_settings_are_refused_by_argparse(flag, value, capsys):
    import evaluate as command_line
    with pytest.raises(SystemExit) as exit:
        command_line.parse_args(["--checkpoint", "RUN", flag, value])
    assert exit.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.slow
def test_an_out_of_range_setting_is_a_one_line_argparse_error_before_anything_runs(tmp_path, cache):
    result = evaluate("--checkpoint", tmp_path, "--num-examples", "0", cache=cache)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --num-examples" in result.stderr.splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# Resuming an interrupted evaluation

TIMING = {"seconds_per_example", "model_time_share", "seconds"}


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.mark.slow
def test_resume_finishes_an_interrupted_evaluation_as_if_never_stopped(tiny_run, shared_data, tmp_path, cache):
    """The state a kill leaves: results.json as written at the start (complete false), the lines of
    the examples that finished, and a last line cut short. --resume attacks only the rest."""
    args = ["--checkpoint", tiny_run, "--attack", "all", "--num-examples", 8, "--eps", 0.5, "--pgd-steps", 2,
            "--population", 6, "--generations", 2, "--synonyms", "counterfitted", "--data-dir", shared_data]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert evaluate(*args, "--out", whole, cache=cache).returncode == 0
    assert evaluate(*args, "--out", cut, cache=cache).returncode == 0
    started = json.loads((cut / "results.json").read_text()) | {"metrics": None, "complete": False}
    (cut / "results.json").write_text(json.dumps(started))
    lines = (cut / "adversarial.jsonl").read_text().splitlines()
    kept = lines[:11]  # all of pwws, 3 of textfooler
    (cut / "adversarial.jsonl").write_text("".join(line + "\n" for line in kept) + lines[11][:40])

    result = evaluate("--resume", cut, "--attack", "none", cache=cache)  # other flags are ignored
    assert result.returncode == 0, result.stderr[-3000:]
    assert "textfooler" in result.stdout
    expected, resumed = (json.loads((folder / "results.json").read_text()) for folder in (whole, cut))
    assert resumed["complete"] is True and resumed["indices"] == expected["indices"]
    assert without_timing(resumed["metrics"]) == without_timing(expected["metrics"])
    assert {k: v for k, v in resumed["settings"].items() if k != "out"} == \
        {k: v for k, v in expected["settings"].items() if k != "out"}
    resumed_lines = read_lines(cut)
    assert all(json.loads(line) in resumed_lines for line in kept)  # what was written stays as it was
    assert without_timing(resumed_lines) == without_timing(read_lines(whole))  # in the same order


# ---------------------------------------------------------------------------------------------
# torchrun: the examples shared out among processes

PROBABILITIES = {"probs_before", "probs_after"}


def assert_same_evaluation(folder: Path, expected: Path) -> None:
    """The same results.json, timing and the machine aside, and the same adversarial.jsonl, line by
    line in the same order, the probabilities to 1e-6 (another batch composition rounds floats
    otherwise), and nothing else left in the folder."""
    assert sorted(path.name for path in folder.iterdir()) == ["adversarial.jsonl", "results.json"]
    got, want = (json.loads((f / "results.json").read_text()) for f in (folder, expected))
    assert got["complete"] is True and got["indices"] == want["indices"] and got["resolved"] == want["resolved"]
    assert without_timing(got["metrics"]) == without_timing(want["metrics"])
    assert {k: v for k, v in got["settings"].items() if k != "out"} == \
        {k: v for k, v in want["settings"].items() if k != "out"}
    lines, expected_lines = read_lines(folder), read_lines(expected)
    assert [(line["attack"], line["index"]) for line in lines] == \
        [(line["attack"], line["index"]) for line in expected_lines]
    for line, want_line in zip(without_timing(lines), without_timing(expected_lines)):
        assert {k: v for k, v in line.items() if k not in PROBABILITIES} == \
            {k: v for k, v in want_line.items() if k not in PROBABILITIES}
        for key in PROBABILITIES:
            assert line[key] == pytest.approx(want_line[key], abs=1e-6)


@pytest.fixture(scope="module")
def in_processes(tiny_run, shared_data, workspace, cache, torchrun):
    """An evaluation run by one process and the same by two: attack -> (its flags, one, two)."""
    def run(attack: str) -> tuple[list, Path, Path]:
        args = ["--checkpoint", tiny_run, "--attack", attack, "--num-examples", 8, "--eps", 0.5, "--pgd-steps", 2,
                "--population", 6, "--generations", 2, "--synonyms", "counterfitted", "--batch-size", 2,
                "--data-dir", shared_data]  # batch size 2: four ASCC chunks, two for each process
        one, two = workspace / f"{attack}-one", workspace / f"{attack}-two"
        if not one.exists():
            result = evaluate(*args, "--out", one, cache=cache)
            assert result.returncode == 0, result.stderr[-3000:]
            result = run_cli(*args, "--out", two, script="evaluate.py", cache=cache, launcher=torchrun)
            assert result.returncode == 0, result.stderr[-3000:]
        return args, one, two
    return run


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["all", "ascc"])
def test_two_torchrun_processes_write_what_one_process_writes(in_processes, attack):
    """Each process attacks every other example (ASCC: every other chunk), writing its own part;
    rank 0 merges the parts into the one process's adversarial.jsonl and writes its results.json."""
    _, one, two = in_processes(attack)
    assert json.loads((two / "results.json").read_text())["environment"]["processes"] == 2
    assert_same_evaluation(two, one)


@pytest.mark.slow
def test_a_killed_two_process_evaluation_resumes_as_if_never_stopped(in_processes, tmp_path, cache, torchrun):
    """The state a kill leaves: results.json as written at the start, each process's part with the
    lines of the examples it finished and a last line cut short, no adversarial.jsonl yet."""
    _, one, two = in_processes("all")
    cut = tmp_path / "cut"
    cut.mkdir()
    started = json.loads((two / "results.json").read_text()) | {"metrics": None, "complete": False}
    (cut / "results.json").write_text(json.dumps(started))
    position = {index: n for n, index in enumerate(started["indices"])}
    kept = {}
    for rank, keep in enumerate([6, 3]):  # rank 0: pwws's 4 and 2 of textfooler; rank 1: 3 of pwws
        part = [line for line in (two / "adversarial.jsonl").read_text().splitlines()
                if position[json.loads(line)["index"]] % 2 == rank]
        kept[rank] = part[:keep]
        (cut / f"adversarial.rank{rank}.jsonl").write_text("".join(line + "\n" for line in part[:keep])
                                                           + part[keep][:40])
    result = run_cli("--resume", cut, script="evaluate.py", cache=cache, launcher=torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = read_lines(cut)
    assert all(json.loads(line) in resumed for part in kept.values() for line in part)  # kept as written
    assert_same_evaluation(cut, one)


@pytest.mark.slow
def test_resume_of_a_folder_that_is_no_evaluation_is_a_usage_error(tmp_path, cache):
    (tmp_path / "out").mkdir()
    assert_one_line_error(evaluate("--resume", tmp_path / "out", cache=cache), "not an evaluate.py results folder")


@pytest.mark.slow
def test_an_existing_out_points_to_resume(tiny_run, shared_data, tmp_path, cache):
    out = tmp_path / "out"
    assert evaluate("--checkpoint", tiny_run, "--attack", "none", "--num-examples", 2, "--data-dir", shared_data,
                    "--out", out, cache=cache).returncode == 0
    result = evaluate("--checkpoint", tiny_run, "--attack", "none", "--num-examples", 2, "--data-dir", shared_data,
                      "--out", out, cache=cache)
    assert_one_line_error(result, f"--resume {out}")


@pytest.mark.slow
def test_the_worst_case_over_a_runs_attacks_and_over_joined_runs_is_the_union_of_what_they_broke(
        attacked, workspace, cache):
    def broken(folder: Path) -> set[int]:
        return {line["index"] for line in read_lines(folder)
                if line["status"] == "successful" and not line["attack"].startswith("pgd")}

    def worst(results: dict) -> dict:
        return next(row for row in results["metrics"] if row["attack"] == "worst case")

    folders = [folder for _, folder in attacked.values()]
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        assert set(map(int, results["worst_case_broken_by"])) == broken(folder)
        held = [line["index"] for line in read_lines(folder) if line["attack"] == "pwws" and line["status"] != "skipped"]
        assert worst(results)["accuracy_under_attack"] == len(set(held) - broken(folder)) / 6
    # the other folder's word searches, on the same checkpoint and examples (its DeepWordBug would be the same attack twice)
    settings = json.loads((folders[1] / "results.json").read_text())["settings"]
    other = workspace / "counterfitted-pwws"
    assert evaluate("--checkpoint", settings["checkpoint"], "--attack", "pwws", "--synonyms", "counterfitted",
                    "--num-examples", 6, "--data-dir", settings["data_dir"], "--out", other, cache=cache).returncode == 0
    result = evaluate("--join", folders[0], other, "--out", workspace / "joined", cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    joined = json.loads((workspace / "joined" / "results.json").read_text())
    assert set(map(int, joined["worst_case_broken_by"])) == broken(folders[0]) | broken(other)
    assert [row["attack"] for row in joined["metrics"]] == ["none", "pwws", "textfooler", "genetic", "deepwordbug", "pwws",
                                                            "worst case"]
    assert joined["attacks"] == ["pwws/wordnet", "textfooler/wordnet", "genetic/wordnet", "deepwordbug/characters",
                                 "pwws/counterfitted"]
    assert "worst case" in result.stdout and "AutoAttack's rule" in result.stdout
    again = evaluate("--join", folders[0], folders[0], "--out", workspace / "twice", cache=cache)
    assert_one_line_error(again, "is in two of the folders")


def test_join_refuses_unfinished_evaluations_and_other_examples(tmp_path):
    import eval_folder
    for name, indices, complete in (("a", [1, 2], True), ("b", [1, 3], True), ("c", [1, 2], False)):
        (tmp_path / name).mkdir()
        eval_folder.write_json(tmp_path / name / "results.json", {"resolved": {"model": "m"}, "indices": indices,
                                                                  "complete": complete, "metrics": []})
    with pytest.raises(data.UsageError, match="has not finished; finish it with --resume"):
        eval_folder.join([str(tmp_path / "a"), str(tmp_path / "c")], None)
    with pytest.raises(data.UsageError, match="another checkpoint or other examples"):
        eval_folder.join([str(tmp_path / "a"), str(tmp_path / "b")], None)
