"""What the result runners (experiments.py, studies.py, parity.py) share: running train.py and
evaluate.py as a user would, unless what they leave says the run has finished; one named reader for
each file they leave, so no runner knows a file by name; the copy of a run's records kept under
results/; the numbers every table computes; and the writer of results/<name>.md, which keeps the
hand-written text below the generated tables.
"""

import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import transformers

from data import TASKS, Interrupted, UsageError, load_split, read_text
from rift import DEFAULT_MODEL, load_classifier, make_teacher, model_path, teacher_similarity

ATTACK_SEED = 42  # evaluate.py's --seed in every table: all models of a table meet the same test examples


# ---------------------------------------------------------------------------------------------
# What a train.py run folder holds: config.json from the start, last/ at each save, summary.json
# at the end; evaluate.py's folders hold results.json ("complete" at the end) and adversarial.jsonl.

CONFIG, SUMMARY, TRAINING_LOG = Path("config.json"), Path("summary.json"), Path("metrics.jsonl")
RESULTS, OUTCOMES = Path("results.json"), Path("adversarial.jsonl")

def run_config(run: Path) -> dict:
    """config.json: every setting of the run ("config", "resolved") and the machine ("environment")."""
    return json.loads(read_text(run / CONFIG))


def trained(run: Path) -> dict | None:
    """summary.json, the final numbers, once the run has finished; None before."""
    return json.loads(read_text(run / SUMMARY)) if (run / SUMMARY).is_file() else None


def training_resumable(run: Path) -> bool:
    """Whether the run saved its loop state (last/), so `train.py --resume` goes on from there."""
    return (run / "last" / "training_state.json").is_file()


def training_log(run: Path) -> list[dict]:
    """metrics.jsonl's lines (logged steps and dev evaluations); none before the run has begun."""
    path = run / TRAINING_LOG
    return [json.loads(line) for line in read_text(path).splitlines()] if path.is_file() else []


def evaluation_started(folder: Path) -> bool:
    """Whether evaluate.py has written results.json there, so `evaluate.py --resume` can finish it."""
    return (folder / RESULTS).is_file()


def evaluated(folder: Path) -> dict | None:
    """results.json once the evaluation has finished, else None (one written by an evaluate.py
    older than the "complete" key was written only at the end)."""
    if not evaluation_started(folder):
        return None
    report = json.loads(read_text(folder / RESULTS))
    return report if report.get("complete", True) else None


def example_statuses(folder: Path) -> dict[int, str]:
    """Test index -> the attack's outcome (successful, failed, skipped), from adversarial.jsonl."""
    return {line["index"]: line["status"] for line in map(json.loads, read_text(folder / OUTCOMES).splitlines())}


def example_outcomes(folder: Path) -> dict[int, tuple[int, int]]:
    """Test index -> (right before the attack, right after it): skipped examples were already wrong,
    failed attacks left them right."""
    return {index: (int(status != "skipped"), int(status == "failed")) for index, status in example_statuses(folder).items()}


def cka_path(run: Path, feature: str) -> Path:
    return run / f"cka-{feature}.json"


def measured_cka(run: Path, feature: str) -> float | None:
    """The linear CKA with the teacher that teacher_cka measured, or None before it has."""
    path = cka_path(run, feature)
    return json.loads(read_text(path))["linear_cka"] if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# A run's records (what it and its evaluations wrote, all but the checkpoints: about 1 MB a run)
# are kept under results/ beside its table and committed with it: runs/ lives only as long as its
# machine, and a table of paired differences needs every example's outcome, not just the means.

def finished_records(run: Path) -> list[Path]:
    """The files of a finished run and of its finished evaluations and CKAs, relative to the run."""
    if trained(run) is None:
        return []
    records = [CONFIG, SUMMARY, TRAINING_LOG]
    records += [path.relative_to(run) for path in sorted(run.glob("cka-*.json"))]
    for folder in sorted(run.glob("eval/*/")):
        if evaluated(folder) is not None:
            records += [path.relative_to(run) for path in (folder / RESULTS, folder / OUTCOMES)]
    return records


def copy_records(source: Path, target: Path) -> None:
    """Copy the finished records of run folder `source` to `target` (files already there are
    replaced): keeping them under results/, or bringing them back to a runs/ that has lost them."""
    for record in finished_records(source):
        (target / record).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / record, target / record)


# ---------------------------------------------------------------------------------------------
# Running the command lines

def data_flags(data_dir: str | None) -> list[str]:
    return ["--data-dir", data_dir] if data_dir else []


def run_cli(command: list[str], folder: Path) -> None:
    """Run train.py or evaluate.py unless `folder` holds its finished output. An interrupted run
    is resumed from where it was saved (train.py: its last/, evaluate.py: its results.json); one
    with nothing saved yet is started again."""
    if command[0] == "train.py":
        done, resumable = trained(folder) is not None, training_resumable(folder)
        data = command[command.index("--data-dir"):][:2] if "--data-dir" in command else []
    else:
        done, resumable, data = evaluated(folder) is not None, evaluation_started(folder), []
    if done:
        print(f"done already: {folder}")
        return
    if resumable:
        command = [command[0], "--resume", str(folder), *data]
    elif folder.exists():
        shutil.rmtree(folder)
    print("+ python " + " ".join(command), flush=True)
    with subprocess.Popen([sys.executable, *command]) as process:
        try:
            process.wait()
        except Interrupted as stop:  # the command stops as it would alone, saving what it holds
            if stop.signum == signal.SIGTERM:  # Ctrl-C reached it by itself, a SIGTERM only this process
                process.terminate()
            process.wait()
            raise
    if process.returncode != 0:
        raise UsageError(f"python {' '.join(command)} failed (its error is above); rerun to resume")


def tiny_model(folder: Path) -> str:
    """A 2-layer random BERT encoder with the default model's tokenizer: the smoke tests' model."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path(DEFAULT_MODEL))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(folder)  # a pre-trained encoder: any number of classes
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_classifier(encoder: str, folder: Path) -> str:
    """The encoder with a (random, untrained) classification head, saved as a classifier folder that
    evaluate.py accepts without a train.py run."""
    model, tokenizer = load_classifier(encoder, num_labels=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def teacher_cka(run: Path, examples: int, data_dir: str | None, feature: str) -> None:
    """<run>/cka-<feature>.json: linear CKA between the best checkpoint's feature S and the
    pre-trained model's T on the first `examples` dev sentences."""
    path = cka_path(run, feature)
    if path.is_file():
        print(f"done already: {path}")
        return
    config = run_config(run)
    task = TASKS[config["config"]["task"]]
    model, tokenizer = load_classifier(str(run / "best"))
    teacher = make_teacher(load_classifier(config["resolved"]["model_path"], num_labels=len(task.labels))[0])
    dev = load_split(task, "dev", data_dir)[:examples]
    cka = teacher_similarity(model, teacher, tokenizer, dev, config["resolved"]["max_length"], feature)
    path.write_text(json.dumps({"linear_cka": cka, "feature": feature, "examples": len(dev), "split": "dev",
                                "teacher": config["resolved"]["model_path"]}, indent=2))
    print(f"{run.name}: linear CKA with the teacher ({feature}) {cka:.4f} -> {path}")


# ---------------------------------------------------------------------------------------------
# The numbers and words of the tables

def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def add_evaluation(row: dict, name: str, report: dict) -> None:
    """Evaluation `name`'s numbers into a table's row: the accuracy under its attack with their
    binomial standard error, and its settings; the clean accuracy from the largest sample (each
    attack of a table may have its own)."""
    metrics = report["metrics"]
    n = metrics[1]["examples"]
    row |= {f"{name}_examples": n, f"{name}_accuracy": metrics[1]["accuracy_under_attack"],
            f"{name}_success_rate": metrics[1]["attack_success_rate"],
            f"{name}_se": binomial_se(metrics[1]["accuracy_under_attack"], n), f"{name}_settings": report["settings"]}
    if n > row.get("examples", 0):
        row |= {"examples": n, "clean_evaluation": name, "clean_accuracy": metrics[0]["clean_accuracy"],
                "clean_se": binomial_se(metrics[0]["clean_accuracy"], n)}


def paired_difference(root: Path, ours: str, theirs: str, evaluation: str, after: int) -> tuple[float, float]:
    """(mean, standard error) of run `ours` minus run `theirs`, example by example, right before
    (after=0) or after (after=1) the attack of evaluation folder `evaluation`: sd / sqrt(n)."""
    a, b = (example_outcomes(root / name / "eval" / evaluation) for name in (ours, theirs))
    differences = [a[i][after] - b[i][after] for i in a]
    return statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))


def recorded(settings: list[dict], key: str, unrecorded: str) -> str:
    """What the runs or evaluations whose `settings` finished recorded for `key`, each value once
    ("1 / 3" where they differ), or `unrecorded` where none has: a report states what was used."""
    values = sorted({str(s[key]) for s in settings if s and key in s})
    return " / ".join(values) if values else unrecorded


def words_changed(settings: list[dict]) -> str:
    """How many words the word attacks could change, as the evaluations recorded it."""
    rates = sorted({s["max_modify_rate"] for s in settings if s and "max_modify_rate" in s})
    if not rates:
        return "as many words as evaluate.py's --max-modify-rate default allows"
    return " / ".join("no cap on the words changed" if rate >= 1 else f"at most {rate:.0%} of the words changed"
                      for rate in rates)


KEPT_TEXT = "<!-- end of generated tables; the text below is kept when the tables are rewritten -->"


def write_page(path: Path, generated: str) -> None:
    """results/<name>.md: the generated text, the KEPT_TEXT line, then whatever the page held below
    that line before (the discussion written by hand), so rewriting the tables keeps it."""
    kept = "\n"
    if path.is_file() and KEPT_TEXT in (old := read_text(path)):
        kept = old.split(KEPT_TEXT, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generated.rstrip("\n") + "\n\n" + KEPT_TEXT + kept)
