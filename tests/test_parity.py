"""Parity with the field's PWWS: rift's default attack against golden per-example outcomes that
TextAttack 0.3.11 recorded on a small fixed model and 100 SST-2 test sentences (tests/parity/README.md).
If a change to attacks.py or synonyms.py moves rift away from TextAttack, this fails. And
experiments/parity.py, which runs both tools side by side: its rows, DeepWordBug's rates and their
verdict, and its bad inputs. And experiments/textattack_peer.py, its copy of the harness's call."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import attacking
import parity
import synonyms
from conftest import REPO, assert_one_line_error, run_cli
from data import TASKS, UsageError, read_examples
from rift import load_classifier

GOLDEN = Path(__file__).parent / "parity"


@pytest.fixture(scope="module")
def victim():
    model, tokenizer = load_classifier(str(GOLDEN / "model"))
    with attacking.Victim(model.eval(), tokenizer, max_length=64) as victim:
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
    results = dict(attacking.attack_examples(victim, examples, "pwws", found, list(range(len(examples)))))
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


def write_deepwordbug_runs(folder: Path, theirs: list[str], mine: list[str], seconds: tuple[float, float]) -> None:
    """What both tools leave for one model: TextAttack's results.json and adversarial.jsonl (via
    textattack_peer.py), rift's evaluate.py results.json and adversarial.jsonl, outcome by outcome."""
    (folder / "textattack").mkdir(parents=True)
    (folder / "rift").mkdir()

    def counts(outcomes):
        count = {kind: outcomes.count(kind) for kind in ("successful", "failed", "skipped")}
        attacked = count["successful"] + count["failed"]
        return count | {"clean_accuracy": attacked / len(outcomes),
                        "accuracy_under_attack": count["failed"] / len(outcomes),
                        "attack_success_rate": count["successful"] / attacked, "words_perturbed_pct": 20.0,
                        "avg_queries": 30.0}

    (folder / "textattack" / "adversarial.jsonl").write_text(
        "".join(json.dumps({"row": n, "result": r}) + "\n" for n, r in enumerate(theirs)))
    (folder / "textattack" / "results.json").write_text(json.dumps(counts(theirs) | {
        "n_examples": len(theirs), "real_model_texts_per_attacked_example": 28.0, "seconds_per_example": seconds[0],
        "attack_args": {"random_seed": 765}}))
    (folder / "rift" / "adversarial.jsonl").write_text(
        "".join(json.dumps({"attack": "deepwordbug", "index": n, "status": r}) + "\n"
                for n, r in reversed(list(enumerate(mine)))))
    (folder / "rift" / "results.json").write_text(json.dumps({"complete": True, "settings": {"seed": 42}, "metrics": [
        {"attack": "none"}, {"attack": "deepwordbug", "examples": len(mine), "avg_model_calls": 31.0,
                             "seconds_per_example": seconds[1]} | counts(mine)]}))


def test_deepwordbug_rows_give_each_rate_its_binomial_se_and_pair_the_success_difference(tmp_path):
    theirs = ["successful"] * 6 + ["failed"] * 2 + ["skipped", "successful"]
    mine = ["successful"] * 5 + ["failed"] * 3 + ["successful", "skipped"]  # the last two: one tool skipped each
    write_deepwordbug_runs(tmp_path, theirs, mine, (2.0, 0.5))
    (peer, ours), comparison = parity.deepwordbug_rows("m", tmp_path)
    assert (peer["tool"], ours["tool"], peer["model"]) == ("TextAttack 0.3.11", "rift", "m")
    assert (peer["seed"], ours["seed"]) == (765, 42)
    assert (peer["examples"], peer["attacked"], ours["attacked"]) == (10, 9, 9)
    assert peer["attack_success_rate"] == pytest.approx(7 / 9)
    assert peer["attack_success_rate_se"] == pytest.approx((7 / 9 * 2 / 9 / 9) ** 0.5)
    assert ours["accuracy_under_attack_se"] == pytest.approx((0.3 * 0.7 / 10) ** 0.5)
    # Paired on the 8 sentences both attacked: one where rift failed and TextAttack succeeded.
    differences = [0] * 5 + [-1, 0, 0]
    mean = sum(differences) / 8
    sd = (sum((d - mean) ** 2 for d in differences) / 7) ** 0.5
    assert comparison["both_attacked"] == 8
    assert comparison["difference"] == pytest.approx(-1 / 8)
    assert comparison["difference_se"] == pytest.approx(sd / 8 ** 0.5)
    assert comparison["agree"] and comparison["same_outcome"] == pytest.approx(0.7)
    assert comparison["speedup"] == pytest.approx(4.0)


def test_the_verdict_is_within_two_standard_errors_of_the_paired_difference():
    rows = range(40)
    always = {n: "successful" for n in rows}
    assert parity.success_difference(always, always) == {"both_attacked": 40, "difference": 0.0,
                                                          "difference_se": 0.0, "agree": True}
    half = {n: "successful" if n % 2 else "failed" for n in rows}
    apart = parity.success_difference(always, half)  # rift fails on 20 of 40 that TextAttack broke
    assert apart["difference"] == -0.5 and not apart["agree"]
    close = parity.success_difference(always, {n: "failed" if n == 0 else "successful" for n in rows})
    assert close["difference"] == pytest.approx(-1 / 40) and close["agree"]  # 1/40 against a se of 1/40
    with pytest.raises(UsageError, match="more --examples"):
        parity.success_difference({0: "successful", 1: "skipped"}, {0: "successful", 1: "failed"})


def test_the_deepwordbug_page_says_the_verdict_and_regenerates_from_its_json(tmp_path, capsys):
    rows, comparisons = [], []
    for model, mine in (("agrees", ["successful"] * 19 + ["failed"]), ("differs", ["failed"] * 20)):
        write_deepwordbug_runs(tmp_path / model, ["successful"] * 20, mine, (1.0, 0.25))
        model_rows, comparison = parity.deepwordbug_rows(model, tmp_path / model)
        rows += model_rows
        comparisons.append(comparison)
    (tmp_path / "parity-deepwordbug.json").write_text(json.dumps({
        "attack": "deepwordbug", "sentences": "runs/parity/sentences.tsv", "examples": 20,
        "checkpoints": ["runs/agrees", "runs/differs"], "rows": rows, "comparisons": comparisons}))
    parity.main(["--attack", "deepwordbug", "--table-only", "--results-dir", str(tmp_path)])
    page = (tmp_path / "parity-deepwordbug.md").read_text()
    assert "--attack deepwordbug --checkpoints runs/agrees runs/differs" in page and "seed 765" in page
    assert "0.950 ± 0.049" in page and "-0.050 ± 0.050" in page and "-1.000 ± 0.000" in page
    verdicts = [line.split() for line in page.splitlines()  # model, both attacked, difference ± se, verdict, ...
                if line.startswith(("agrees ", "differs ")) and "TextAttack" not in line and "rift" not in line]
    assert [(words[0], words[5]) for words in verdicts] == [("agrees", "yes"), ("differs", "no")]
    assert "agree within two standard errors on 1 of 2 models" in page
    parity.main(["--attack", "deepwordbug", "--table-only", "--results-dir", str(tmp_path)])
    assert (tmp_path / "parity-deepwordbug.md").read_text() == page
    assert "within 2 se" in capsys.readouterr().out


def peer_venv() -> Path:
    """Where the harness's setup.sh builds its venv (textattack_peer.py looks there too)."""
    return Path(os.environ.get("RIFT_PEERS") or Path.home() / ".cache" / "rift-peers") / "textattack" / "venv"


@pytest.mark.slow
def test_textattacks_deepwordbug_runs_in_the_copy_of_the_harness_call_seeded(tmp_path):
    harness = REPO.parent / "shared" / "peers" / "textattack"
    if not (harness / "stubs").is_dir() or not (peer_venv() / "bin" / "python").is_file():
        pytest.skip(f"no TextAttack harness at {harness} or no venv at {peer_venv()}: run its setup.sh once")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outcomes = []
    for seed, out in (("7", "a"), ("7", "b")):
        command = [sys.executable, "experiments/textattack_peer.py", "--recipe", "deepwordbug", "--model",
                   str(GOLDEN / "model"), "--file", str(GOLDEN / "sentences.tsv"), "--n", "6", "--max-length", "64",
                   "--seed", seed, "--out", str(tmp_path / out)]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((tmp_path / out / "results.json").read_text())
        assert (summary["attack"], summary["synonyms"], summary["seed"], summary["n_examples"]) == \
            ("deepwordbug", "characters", 7, 6)
        assert "DeepWordBugGao2018" in summary["recipe"] and summary["attack_args"]["random_seed"] == 7
        lines = [json.loads(line) for line in (tmp_path / out / "adversarial.jsonl").read_text().splitlines()]
        assert [line["row"] for line in lines] == list(range(6))
        outcomes.append([(line["result"], line["perturbed_text"], line["queries"]) for line in lines])
    assert outcomes[0] == outcomes[1]  # the same seed draws the same edits


@pytest.mark.slow
def test_the_copy_of_the_harness_call_refuses_bad_input_in_one_line(tmp_path):
    command = [sys.executable, "experiments/textattack_peer.py", "--recipe", "deepwordbug", "--model", "m",
               "--file", "f.tsv", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "RIFT_PEERS": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, str(tmp_path / "textattack" / "venv"), "setup.sh")
    refused = subprocess.run(command + ["--synonyms", "counterfitted"], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "takes no --synonyms" in refused.stderr
