"""Parity with the field's PWWS: rift's default attack against golden per-example outcomes that
TextAttack 0.3.11 recorded on a small fixed model and 100 SST-2 test sentences (tests/parity/README.md).
If a change to attacks.py or synonyms.py moves rift away from TextAttack, this fails. And
experiments/parity.py, which runs both tools side by side: its rows and its bad inputs."""

import json
from pathlib import Path

import pytest

import attacks
import parity
import synonyms
from conftest import assert_one_line_error, run_cli
from data import TASKS, read_examples
from rift import load_classifier

GOLDEN = Path(__file__).parent / "parity"


@pytest.fixture(scope="module")
def victim():
    model, tokenizer = load_classifier(str(GOLDEN / "model"))
    with attacks.Victim(model.eval(), tokenizer, max_length=64) as victim:
        yield victim


@pytest.mark.slow
@pytest.mark.parametrize("source", ["wordnet", "counterfitted"])
def test_rift_pwws_reaches_textattacks_outcomes(victim, source, shared_data):
    if source == "wordnet" and not (synonyms.DEBIAN_WORDNET / "index.noun").is_file():
        pytest.skip("no WordNet: apt-get install wordnet-base (make setup does)")
    found = (synonyms.wordnet_synonyms()[0] if source == "wordnet"
             else synonyms.counterfitted_synonyms(data_dir=str(shared_data))[0])
    examples = read_examples(GOLDEN / "sentences.tsv", TASKS["sst2"])
    golden = [json.loads(line) for line in (GOLDEN / f"textattack-{source}.jsonl").open()]
    results = dict(attacks.attack_examples(victim, examples, "pwws", found, list(range(len(examples)))))
    ours = [results[line["row"]] for line in golden]
    same_outcome = sum(r.status == line["result"] for r, line in zip(ours, golden))
    same_text = sum(" ".join(r.perturbed) == line["perturbed_text"] for r, line in zip(ours, golden))
    success = {"rift": sum(r.status == "successful" for r in ours),
               "textattack": sum(line["result"] == "successful" for line in golden)}
    # Recorded: all 100 the same, outcome and text. The slack is for another CPU's float rounding;
    # it is tight enough to catch the stricter variants (WordNet's usual part of speech: 70 same
    # texts; the extended stopwords: 92).
    assert same_outcome >= 98 and same_text >= 97, (same_outcome, same_text)
    assert abs(success["rift"] - success["textattack"]) <= 2, success
    assert all(len(r.changed) == line["words_changed"] for r, line in zip(ours, golden)
               if r.status == line["result"] == "successful" and " ".join(r.perturbed) == line["perturbed_text"])
    # Queries, counted by TextAttack's rule (every text handed in, cache hits too): recorded 95 of
    # 100 equal under WordNet and 99 under the table (18 and 19 when rift counted only the texts it
    # scored); the others are 1-4 short of TextAttack's, not yet explained.
    same_queries = sum(r.queries == line["queries"] for r, line in zip(ours, golden))
    assert same_queries >= 93, same_queries
    assert all(abs(r.queries - line["queries"]) <= 5 for r, line in zip(ours, golden)
               if " ".join(r.perturbed) == line["perturbed_text"])


# ---------------------------------------------------------------------------------------------
# experiments/parity.py


def test_parity_rows_join_both_tools_example_by_example(tmp_path):
    folder = tmp_path / "m-wordnet"
    (folder / "textattack").mkdir(parents=True)
    (folder / "rift").mkdir()
    theirs = ["successful", "failed", "skipped", "successful"]
    mine = ["successful", "successful", "skipped", "successful"]
    (folder / "textattack" / "adversarial.jsonl").write_text(
        "".join(json.dumps({"row": n, "result": r}) + "\n" for n, r in enumerate(theirs)))
    (folder / "rift" / "adversarial.jsonl").write_text(  # rift writes its lines as examples finish
        "".join(json.dumps({"attack": "pwws", "index": n, "status": mine[n]}) + "\n" for n in (3, 1, 0, 2)))
    (folder / "textattack" / "results.json").write_text(json.dumps({
        "clean_accuracy": 0.75, "accuracy_under_attack": 0.25, "attack_success_rate": 2 / 3,
        "words_perturbed_pct": 10.0, "avg_queries": 50.0, "real_model_texts_per_attacked_example": 40.0,
        "seconds_per_example": 3.0}))
    (folder / "rift" / "results.json").write_text(json.dumps({"complete": True, "metrics": [
        {"attack": "none"}, {"attack": "pwws", "clean_accuracy": 0.75, "accuracy_under_attack": 0.0,
                             "attack_success_rate": 1.0, "words_perturbed_pct": 12.0, "avg_queries": 48.0,
                             "avg_model_calls": 41.0, "seconds_per_example": 1.0}]}))
    peer, ours = parity.parity_rows("m", "wordnet", folder)
    assert peer["tool"].startswith("TextAttack") and peer["model_texts"] == 40.0 and "same_outcome" not in peer
    assert ours["same_outcome"] == pytest.approx(3 / 4) and ours["speedup"] == pytest.approx(3.0)
    assert ours["attack_success_rate"] == 1.0 and ours["model_texts"] == 41.0 and ours["avg_queries"] == 48.0


@pytest.mark.slow
def test_parity_without_the_harness_or_checkpoints_is_a_one_line_error(tmp_path):
    cache = tmp_path / "cache"
    script = "experiments/parity.py"
    result = run_cli("--peer", tmp_path / "nowhere", "--checkpoints", tmp_path, script=script, cache=cache)
    assert_one_line_error(result, "--peer", "setup.sh")
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / "run.sh").write_text("exit 1\n")
    assert_one_line_error(run_cli("--peer", tmp_path / "peer", script=script, cache=cache), "--checkpoints")
    assert_one_line_error(run_cli("--peer", tmp_path / "peer", "--checkpoints", tmp_path / "peer",
                                  script=script, cache=cache), "not a train.py run folder")
