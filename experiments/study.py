"""What the studies under experiments/ share. A study is a list of train.py runs, each attacked by
evaluate.py on the same test examples, gathered into results/<name>.json and written as a page,
results/<name>.md (its tables, then the text written by hand below KEPT_TEXT) with a figure.

Each study is a script, run from the repository root: `python experiments/pilot.py --help`. Every
train.py or evaluate.py command runs in a subprocess, exactly as a user would run it, unless what
it leaves says it has finished; one cut short is resumed from its last save, so a study can span
sessions. The finished runs' records (all but their checkpoints) are kept under
results/<name>/<run>/ to be committed, and a machine without the runs restores them from there.
`--table-only` writes the page and figure from results/<name>.json alone: every page regenerates
from its committed JSON.
"""

import argparse
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the scripts run from experiments/ and import the core

from cli import SEED, pyplot  # noqa: E402
from costs import tiny_model  # noqa: E402
from data import TASKS, Interrupted, UsageError, load_split, locate, read_text  # noqa: E402
from rift import DEFAULT_MODEL, load_classifier, make_teacher, teacher_similarity  # noqa: E402

ATTACK_SEED = SEED  # evaluate.py's --seed in every study: all models of a page meet the same test examples
OTHER_SEED = SEED + 1  # where a study repeats a run with a second seed

# The attacks the studies run: an evaluation's name (its folder eval/<name>) -> evaluate.py's flags
# and the column it heads.
ATTACKS = {"pwws": (("--attack", "pwws"), "pwws/wordnet"),
           "pwws_counterfitted": (("--attack", "pwws", "--synonyms", "counterfitted"), "pwws/counterfitted"),
           "ascc": (("--attack", "ascc"), "ascc"),
           "genetic": (("--attack", "genetic", "--synonyms", "counterfitted"), "genetic/counterfitted")}
SMOKE_GENETIC = ("--population", "4", "--generations", "2")
SMOKE_TRAIN = ("--max-train-examples", "64", "--max-steps", "2", "--batch-size", "12", "--eval-every", "1",
               "--max-length", "32", "--select-examples", "6")


def attacked_on(examples: dict[str, int]) -> dict[str, tuple]:
    """A study's evaluations, from how many examples each attack sees: name -> (evaluate.py's flags,
    examples attacked)."""
    return {name: (ATTACKS[name][0], n) for name, n in examples.items()}


def smoke_evaluations(evaluations: dict[str, tuple]) -> dict[str, tuple]:
    """A study's evaluations for a smoke run: each attack on 4 examples, the genetic search small."""
    return {name: (flags + (SMOKE_GENETIC if name == "genetic" else ()), 4) for name, (flags, _) in evaluations.items()}


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


def training_curve(run: Path) -> list[dict]:
    """metrics.jsonl's logged steps (loss terms, MI bound), without the dev evaluations."""
    return [line for line in training_log(run) if "loss" in line]


def evaluation_started(folder: Path) -> bool:
    """Whether evaluate.py has written results.json there, so `evaluate.py --resume` can finish it."""
    return (folder / RESULTS).is_file()


def evaluated(folder: Path) -> dict | None:
    """results.json once the evaluation has finished, else None."""
    if not evaluation_started(folder):
        return None
    report = json.loads(read_text(folder / RESULTS))
    return report if report["complete"] else None


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


def finished_records(run: Path) -> list[Path]:
    """The files of a finished run and of its finished evaluations and CKAs, relative to the run:
    about 1 MB a run, every example's outcome included (paired differences need them)."""
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
    with subprocess.Popen([sys.executable, str(REPO / command[0]), *command[1:]]) as process:
        try:
            process.wait()
        except Interrupted as stop:  # the command stops as it would alone, saving what it holds
            if stop.signum == signal.SIGTERM:  # Ctrl-C reached it by itself, a SIGTERM only this process
                process.terminate()
            process.wait()
            raise
    if process.returncode != 0:
        raise UsageError(f"python {' '.join(command)} failed (its error is above); rerun to resume")


def smoke_model(root: Path) -> str:
    """The tiny random encoder that --smoke trains, made once under root."""
    if not (root / "tiny-model" / "config.json").is_file():
        tiny_model(root / "tiny-model")
    return str(root / "tiny-model")


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
# A study: its runs, trained, measured against the teacher and attacked

@dataclass(frozen=True)
class Run:
    name: str  # its folder under the study's runs
    method: str
    seed: int
    flags: tuple[str, ...] = ()  # its own train.py flags, beside the study's
    against: str | None = None  # the run it is compared with, paired on the same examples


@dataclass(frozen=True)
class Study:
    name: str  # results/<name>.{md,json,png}, and the records under results/<name>/
    command: str  # python <command> runs it
    train: tuple[str, ...]  # train.py flags every run shares
    runs: tuple[Run, ...]
    evaluations: dict  # name (its folder eval/<name>) -> (evaluate.py flags, examples attacked)
    title: str = ""
    design: str = ""  # the paragraph that says what every run shares: {fields} from design_settings
    cka_features: tuple[str, ...] = ("mean", "cls")
    cka_examples: int = 872  # dev examples the CKA is measured on
    last: tuple[str, ...] = ()  # slow evaluations, run once every run has had the others
    train_file: str | None = None  # a file under the data folders to train on instead of the task's train split
    smoke: dict = field(default_factory=dict)  # what --smoke replaces: a few steps and examples


def with_flags(flags: tuple[str, ...], **values) -> tuple[str, ...]:
    """flags with some values replaced: with_flags(train, max_steps=750) sets --max-steps to 750."""
    flags = list(flags)
    for name, value in values.items():
        flags[flags.index("--" + name.replace("_", "-")) + 1] = str(value)
    return tuple(flags)


def train_file_flags(study: Study, data_dir: str | None) -> list[str]:
    """--train-file for a study that trains on a file of the data folders (SNLI's shared copy has a
    20,000-pair train subset, not the full train split)."""
    if study.train_file is None:
        return []
    found = locate(study.train_file, data_dir)
    if found is None:
        raise UsageError(f"{study.command} trains on {study.train_file} (../shared/data): pass --data-dir "
                         "or set RIFT_DATA to the folder that holds it")
    return ["--train-file", str(found)]


def run_study(study: Study, model: str, data_dir: str | None, root: Path, folder: Path,
              after_each: Callable[[], object]) -> None:
    """Restore the runs this machine lacks from their records under folder, then train, measure
    and attack what has not finished, keeping each finished run's records and calling after_each
    after each evaluation."""
    for run in study.runs:
        if not (root / run.name).exists():
            copy_records(folder / study.name / run.name, root / run.name)

    def kept(run: Run) -> None:
        copy_records(root / run.name, folder / study.name / run.name)
        after_each()

    train_file = train_file_flags(study, data_dir)
    for run in study.runs:
        run_one(study, run, model, data_dir, root, train_file, kept)
    for run in study.runs:
        for name in study.last:
            attack_run(study, run, name, data_dir, root)
            kept(run)


def run_one(study: Study, run: Run, model: str, data_dir: str | None, root: Path, train_file: list[str],
            after_each: Callable[[Run], object] = lambda run: None) -> str:
    """One run of a study: trained, its CKA measured, then attacked by each evaluation but the
    study's last ones, calling after_each after each."""
    out = root / run.name
    run_cli(["train.py", *study.train, "--model", model, "--method", run.method, "--seed", str(run.seed),
             *run.flags, "--out", str(out), *train_file, *data_flags(data_dir)], out)
    for feature in study.cka_features:
        teacher_cka(out, study.cka_examples, data_dir, feature)
    for name in study.evaluations:
        if name not in study.last:
            attack_run(study, run, name, data_dir, root)
            after_each(run)
    return run.name


def attack_run(study: Study, run: Run, name: str, data_dir: str | None, root: Path) -> None:
    """evaluate.py's attack `name` of the study on the run, into its eval/<name>."""
    flags, examples = study.evaluations[name]
    out = root / run.name
    run_cli(["evaluate.py", "--checkpoint", str(out), *flags, "--num-examples", str(examples),
             "--seed", str(ATTACK_SEED), "--out", str(out / "eval" / name), *data_flags(data_dir)], out / "eval" / name)


# ---------------------------------------------------------------------------------------------
# The numbers and words of the pages

def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def add_evaluation(row: dict, name: str, report: dict) -> None:
    """Evaluation `name`'s numbers into a page's row: the accuracy under its attack with their
    binomial standard error, and its settings; the clean accuracy from the largest sample (each
    attack of a page may have its own)."""
    metrics = report["metrics"]
    n = metrics[1]["examples"]
    row |= {f"{name}_examples": n, f"{name}_accuracy": metrics[1]["accuracy_under_attack"],
            f"{name}_success_rate": metrics[1]["attack_success_rate"],
            f"{name}_se": binomial_se(metrics[1]["accuracy_under_attack"], n), f"{name}_settings": report["settings"]}
    if n > row.get("examples", 0):
        row |= {"examples": n, "clean_evaluation": name, "clean_accuracy": metrics[0]["clean_accuracy"],
                "clean_se": binomial_se(metrics[0]["clean_accuracy"], n)}


def add_evaluations(row: dict, run: Path, names) -> None:
    for name in names:
        if (report := evaluated(run / "eval" / name)) is not None:
            add_evaluation(row, name, report)


WORST_CASE = "worst_case"  # a page's column beside its evaluations': the worst case over all of them


def outcomes(run: Path, evaluation: str, evaluations) -> dict[int, tuple[int, int]]:
    """example_outcomes of one evaluation of the run, or for WORST_CASE the worst case over all the
    evaluations (AutoAttack's rule: right after only if no attack broke it), on the examples every
    one of them attacked."""
    if evaluation != WORST_CASE:
        return example_outcomes(run / "eval" / evaluation)
    each = [example_outcomes(run / "eval" / name) for name in evaluations]
    common = set.intersection(*map(set, each))
    return {i: (each[0][i][0], min(o[i][1] for o in each)) for i in sorted(common)}


def add_worst_case(row: dict, run: Path, evaluations) -> None:
    """The worst case's accuracy into a page's row, once every one of several evaluations has finished."""
    if len(evaluations) > 1 and all(f"{name}_accuracy" in row for name in evaluations):
        after = [right for _, right in outcomes(run, WORST_CASE, evaluations).values()]
        p = sum(after) / len(after)
        row |= {f"{WORST_CASE}_examples": len(after), f"{WORST_CASE}_accuracy": p,
                f"{WORST_CASE}_se": binomial_se(p, len(after))}


def paired_difference(root: Path, ours: str, theirs: str, evaluation: str, after: int,
                      evaluations=()) -> tuple[float, float]:
    """(mean, standard error) of run `ours` minus run `theirs`, example by example, right before
    (after=0) or after (after=1) the attack of evaluation folder `evaluation` (or the WORST_CASE
    over `evaluations`): sd / sqrt(n)."""
    a, b = (outcomes(root / name, evaluation, evaluations) for name in (ours, theirs))
    differences = [a[i][after] - b[i][after] for i in a]
    return statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))


def paired_gaps(root: Path, rows: list[dict], evaluations) -> list[dict]:
    """Every row minus the row it names ("against") where both have finished, on the same
    examples: right after each attack, and right before it for the clean accuracy."""
    by_name = {r["name"]: r for r in rows}
    gaps = []
    for row in rows:
        other = by_name.get(row["against"])
        if other is None:
            continue
        gap = {"run": row["name"], "against": other["name"]}
        keys = {name: (name, 1) for name in (*evaluations, WORST_CASE)}
        if "clean_evaluation" in row:
            keys = {"clean": (row["clean_evaluation"], 0)} | keys
        for key, (name, after) in keys.items():
            if f"{name}_accuracy" in row and f"{name}_accuracy" in other:
                gap[key], gap[f"{key}_se"] = paired_difference(root, row["name"], other["name"], name, after,
                                                               evaluations)
        if len(gap) > 2:
            gaps.append(gap)
    return gaps


def with_se(row: dict, key: str) -> str | None:
    p = row.get(f"{key}_accuracy")
    return None if p is None else f"{p:.3f} ± {row[f'{key}_se']:.3f}"


def signed_with_se(gap: dict, key: str) -> str | None:
    return f"{gap[key]:+.3f} ± {gap[f'{key}_se']:.3f}" if key in gap else None


def recorded(settings: list[dict], key: str, unrecorded: str) -> str:
    """What the runs or evaluations whose `settings` finished recorded for `key`, each value once
    ("1 / 3" where they differ), or `unrecorded` where none has: a page states what was used."""
    values = sorted({str(s[key]) for s in settings if s and key in s})
    return " / ".join(values) if values else unrecorded


def modify_rates(settings: list[dict]) -> list[float]:
    """The shares of the words the word attacks could change, as the evaluations recorded them."""
    return sorted({s["max_modify_rate"] for s in settings if s and "max_modify_rate" in s})


def words_changed(settings: list[dict]) -> str:
    """How many words the word attacks could change, as the evaluations recorded it."""
    rates = modify_rates(settings)
    if not rates:
        return "as many words as evaluate.py's --max-modify-rate default allows"
    return " / ".join("no cap on the words changed" if rate >= 1 else f"at most {rate:.0%} of the words changed"
                      for rate in rates)


# ---------------------------------------------------------------------------------------------
# Pages

KEPT_TEXT = "<!-- end of generated tables; the text below is kept when the tables are rewritten -->"


def write_page(path: Path, generated: str) -> None:
    """results/<name>.md: the generated text, the KEPT_TEXT line, then whatever the page held below
    that line before (the discussion written by hand), so rewriting the tables keeps it."""
    kept = "\n"
    if path.is_file() and KEPT_TEXT in (old := read_text(path)):
        kept = old.split(KEPT_TEXT, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generated.rstrip("\n") + "\n\n" + KEPT_TEXT + kept)


def write_document(folder: Path, name: str, document: dict) -> dict:
    """results/<name>.json, from which the page is written (and rewritten with --table-only)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(document, indent=2))
    return document


def read_document(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise UsageError(f"--table-only writes the page from {path}, which does not exist: run the study first")
    return json.loads(read_text(path))


def today() -> str:
    return date.today().isoformat()


def draw(plot: Callable, *args) -> None:
    """plot(pyplot, *args), or a note where matplotlib (an optional extra) is missing."""
    try:
        plt = pyplot()
    except UsageError as err:
        print(f"no figure: {err}")
        return
    plot(plt, *args)


# ---------------------------------------------------------------------------------------------
# The command line every study shares

def parser(description: str, runs: str | None = None, encoder: bool = True) -> argparse.ArgumentParser:
    """A study's flags: where its data, runs and page are, --table-only, and (encoder) which model,
    or --smoke."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder holding the data sets (else $RIFT_DATA, else the cache)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="where the page, its JSON and figure go (default: %(default)s)")
    if runs is not None:
        p.add_argument("--runs", type=Path, default=Path(runs), help="the run folders (default: %(default)s)")
    p.add_argument("--table-only", action="store_true",
                   help="write the page and figure from the page's JSON under --results-dir; run nothing")
    if encoder:
        p.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder (default: %(default)s)")
        p.add_argument("--smoke", action="store_true",
                       help="a tiny random model, a few steps and examples (seconds to minutes)")
    return p
