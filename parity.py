"""Parity with TextAttack: its PWWS (0.3.11, the peer harness in ../shared/peers/textattack, a
check run beside rift and never a dependency) and rift's default PWWS on the same models and
sentences, with how often their outcomes agree and how much faster rift is. bench.py is the
command line:

    python bench.py parity --checkpoints RUN RUN   # -> results/parity-sst2.{md,json}
"""

import json
import subprocess
from pathlib import Path

import attacks
import synonyms
from cli import environment, format_table, pick_device
from data import TASKS, UsageError, load_split, read_text
from runner import data_flags, evaluated, example_statuses, run_cli, run_config, write_page

PARITY_SYNONYMS = ("wordnet", "counterfitted")


def peer_results(folder: Path) -> Path:
    """The harness's results.json, written when its attack has finished."""
    return folder / "textattack" / "results.json"


def parity(checkpoints: list[str] | None, peer: Path, examples: int, root: Path, results_dir: Path,
           data_dir: str | None) -> None:
    """TextAttack 0.3.11's PWWS (the peer harness, a check run beside rift, never a dependency) and
    rift's default PWWS on the same `examples` sentences of each train.py run of `checkpoints`, one
    after the other in this process, so that the speed ratio holds on one machine at one time.
    Finished runs are not repeated."""
    peer = peer / "run.sh"
    if not peer.is_file():
        raise UsageError(f"no TextAttack harness at {peer}: pass --peer (the folder of run.sh; run its setup.sh once)")
    if not checkpoints:
        raise UsageError("parity needs --checkpoints: two or more train.py runs on SST-2")
    for run in map(Path, checkpoints):
        if not (run / "config.json").is_file() or not (run / "best").is_dir():
            raise UsageError(f"{run} is not a train.py run folder (config.json and best/)")
    root.mkdir(parents=True, exist_ok=True)
    sentences = root / "sentences.tsv"  # drawn as evaluate.py draws: seed 42, at least 4 words
    test = load_split(TASKS["sst2"], "test", data_dir)
    drawn = [test[i] for i in attacks.sample_examples(test, examples, 42)]
    sentences.write_text("sentence\tlabel\n" + "".join(f"{ex.text}\t{ex.label}\n" for ex in drawn))
    neighbours = synonyms.counterfitted_synonyms(None, data_dir)[1]["path"]
    data = data_flags(data_dir)
    rows = []
    for checkpoint in checkpoints:
        run = Path(checkpoint)
        max_length = run_config(run)["resolved"]["max_length"]
        for source in PARITY_SYNONYMS:
            folder = root / f"{run.name}-{source}"
            if not peer_results(folder).is_file():
                command = ["bash", str(peer), "--model", str(run / "best"), "--file", str(sentences), "--n",
                           str(len(drawn)), "--max-length", str(max_length), "--synonyms", source,
                           "--out", str(folder / "textattack")]
                command += ["--neighbours-json", neighbours] if source == "counterfitted" else []
                print("+ " + " ".join(command), flush=True)
                if subprocess.run(command).returncode != 0:
                    raise UsageError(f"the TextAttack harness failed on {run} ({source}); its error is above")
            run_cli(["evaluate.py", "--checkpoint", str(run), "--file", str(sentences), "--num-examples",
                     str(len(drawn)), "--min-words", "0", "--attack", "pwws", "--synonyms", source,
                     "--out", str(folder / "rift"), *data], folder / "rift")
            rows += parity_rows(run.name, source, folder)
    report = {"sentences": str(sentences), "examples": len(drawn), "rows": rows, "environment": environment(pick_device("cpu"))}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "parity-sst2.json").write_text(json.dumps(report, indent=2))
    table = format_table(rows, PARITY_COLUMNS)
    write_page(results_dir / "parity-sst2.md", f"```\n{table}\n```\n")
    print(table)


def parity_rows(model: str, source: str, folder: Path) -> list[dict]:
    """Both tools' rows for one model and synonym source, and how often their outcomes agree."""
    peer = json.loads(read_text(peer_results(folder)))
    ours = evaluated(folder / "rift")
    pwws = next(row for row in ours["metrics"] if row["attack"] == "pwws")
    theirs = {line["row"]: line["result"]
              for line in map(json.loads, read_text(folder / "textattack" / "adversarial.jsonl").splitlines())}
    mine = example_statuses(folder / "rift")
    agree = sum(theirs[n] == mine[n] for n in mine) / len(mine)
    common = {"model": model, "synonyms": source}
    return [common | {"tool": "TextAttack 0.3.11", "clean_accuracy": peer["clean_accuracy"],
                      "accuracy_under_attack": peer["accuracy_under_attack"],
                      "attack_success_rate": peer["attack_success_rate"],
                      "words_perturbed_pct": peer["words_perturbed_pct"], "avg_queries": peer["avg_queries"],
                      "model_texts": peer["real_model_texts_per_attacked_example"],
                      "seconds_per_example": peer["seconds_per_example"]},
            common | {"tool": "rift", "clean_accuracy": pwws["clean_accuracy"],
                      "accuracy_under_attack": pwws["accuracy_under_attack"],
                      "attack_success_rate": pwws["attack_success_rate"],
                      "words_perturbed_pct": pwws["words_perturbed_pct"], "avg_queries": pwws["avg_queries"],
                      "model_texts": pwws["avg_model_calls"], "seconds_per_example": pwws["seconds_per_example"],
                      "same_outcome": agree, "speedup": peer["seconds_per_example"] / pwws["seconds_per_example"]}]


PARITY_COLUMNS = {"model": "model", "synonyms": "synonyms", "tool": "tool", "clean_accuracy": "clean acc",
                  "accuracy_under_attack": "acc under attack", "attack_success_rate": "success rate",
                  "words_perturbed_pct": "% words", "avg_queries": "queries", "model_texts": "texts scored",
                  "seconds_per_example": "s/example", "same_outcome": "same outcome", "speedup": "x faster"}
