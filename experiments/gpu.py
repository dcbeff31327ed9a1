"""rift on a GPU: self-contained steps for a machine with one, and the commands that file what they
bring back.

    make gpu-bundle                   # gpu/: what a step needs beyond the tracked tree
    python3 experiments/gpu.py run check snli --bundle gpu --out OUT --deadline-s 540
                                      # on the GPU machine: the CUDA paths and their speed, then adv,
                                      # FreeLB and rift on SNLI at ten times the CPU study, as far as fits
    python3 experiments/gpu.py run sst2 --bundle gpu --out OUT --deadline-s 540
                                      # a later command: the three on all of SST-2 (two epochs, as far
                                      # as fits, from check's committed speeds), 1,000 test sentences
    python experiments/gpu.py file OUT      # back here: OUT -> results/gpu/
    python experiments/gpu.py join OUT runs/gpu-snli-rift   # the checkpoint brought back -> a model folder
    python experiments/gpu.py recheck runs/gpu-snli-rift runs/gpu/snli/rift   # its GPU verdicts scored here

On one's own GPU, the same step without --bundle: the default model and $RIFT_DATA, as everywhere.

Why a bundle. A lent GPU machine has torch and transformers but no default model, no data and no
network; only the tracked tree and a few named folders travel (64 MiB in all), and only a few small
files come back, so each step trains, attacks and writes its numbers in one command:
    OUT/<step>.json       the step's report (the checks, the speeds, the machine)
    OUT/<step>.tar.xz     every run's records: config, metrics, summary, CKA, attack results and
                          per-example outcomes (repacked every minute, so a step cut short still
                          brings back what it finished)
    OUT/<step>-<run>.partNN  the last run's kept checkpoint, fp16, in parts under 16 MiB
The bundle's weights are the default model's rounded to fp16 (they travel at half the size); a step
trains from them in fp32. Numbers from a bundle carry that rounding; the pages say so.
"""

import argparse
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import (REPO, SMOKE_TRAIN, Run, Study, attacked_on, copy_records, run_config, run_one, smoke_evaluations,
                   smoke_model, train_file_flags, with_flags)

import torch
from safetensors.torch import load_file, save_file

from cli import SEED, at_least, environment, format_table, pick_device, run_command
from data import Example, UsageError, locate
from gpu_check import CHECK, CHECK_SMOKE, check_paths, check_speed, write_check_page
from paired import write_paired
from pilot import PILOT
from rift import DEFAULT_MODEL, load_classifier, model_path, predict_proba
from snli import SNLI

TRAVEL_LIMIT = 64 * 2**20  # what may travel to the machine: the tracked tree and the bundle
PART_SIZE = 15 * 2**20  # a returned file's limit is 16 MiB
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
               "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
STEP_DATA = {  # the data files each step reads, under the data folders
    "check": ("sst2/train.tsv", "sst2/dev.tsv", "sst2/test.tsv", "synonyms/counterfitted_neighbors.json"),
    "snli": ("snli/train_subset.tsv", "snli/dev.tsv", "snli/test.tsv", "synonyms/counterfitted_neighbors.json"),
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv", "sst2/test.tsv", "synonyms/counterfitted_neighbors.json"),
}
STEPS = tuple(STEP_DATA)
PACK_EVERY_S = 60

# ---------------------------------------------------------------------------------------------
# The bundle


def cast(weights: dict, dtype: torch.dtype) -> dict:
    """The floating-point tensors of a state dict in dtype (fp16 to travel, fp32 to train)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}


def make_bundle(folder: Path, steps: tuple[str, ...], model: str, data_dir: str | None) -> int:
    """folder/: the model (fp16 weights, tokenizer, pooling config) and the steps' data (xz).
    Returns the bytes that will travel with the tracked tree; refuses past the limit."""
    source = Path(model_path(model))
    if not (source / "model.safetensors").is_file():
        raise UsageError(f"the bundle takes the weights from {source}/model.safetensors, which does not exist")
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "model").mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            (folder / "model" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, folder / "model" / name)
    save_file(cast(load_file(source / "model.safetensors"), torch.float16), folder / "model" / "model.safetensors")
    for relative in sorted({f for step in steps for f in STEP_DATA[step]}):
        found = locate(relative, data_dir)
        if found is None:
            raise UsageError(f"the bundle needs {relative}: pass --data-dir or set RIFT_DATA to the folder holding it")
        target = folder / "data" / (relative + ".xz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.compress(found.read_bytes(), preset=9))
    size = travelling_size(folder)
    if size > TRAVEL_LIMIT:
        shutil.rmtree(folder)
        raise UsageError(f"the bundle and the tracked tree would be {size / 2**20:.1f} MiB, over the "
                         f"{TRAVEL_LIMIT / 2**20:.0f} MiB that travel: bundle fewer steps (--steps)")
    print(f"{folder}: {folder_size(folder) / 2**20:.1f} MiB; with the tracked tree {size / 2**20:.1f} MiB travel "
          f"(limit {TRAVEL_LIMIT / 2**20:.0f} MiB)")
    return size


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def travelling_size(bundle: Path) -> int:
    """The bundle plus every file git tracks or would add (the device copies both)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return folder_size(bundle) + sum((REPO / p).stat().st_size for p in listed if p and (REPO / p).is_file())


def unpack_bundle(bundle: Path, work: Path) -> tuple[str, str]:
    """(model folder, data folder) in `work`: the weights in fp32, the data decompressed."""
    if not (bundle / "model" / "model.safetensors").is_file():
        raise UsageError(f"{bundle} is not a bundle (no model/model.safetensors): make gpu-bundle writes one")
    model, data = work / "model", work / "data"
    shutil.copytree(bundle / "model", model)
    save_file(cast(load_file(model / "model.safetensors"), torch.float32), model / "model.safetensors")
    for packed in (bundle / "data").rglob("*.xz"):
        target = data / packed.relative_to(bundle / "data").with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.decompress(packed.read_bytes()))
    return str(model), str(data)


# ---------------------------------------------------------------------------------------------
# Records out: packed as they land, the checkpoint in parts


def pack_records(root: Path, archive: Path) -> None:
    """Every run's records under root (no checkpoints) into archive, written beside and renamed."""
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:xz") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not {"best", "last"} & set(path.relative_to(root).parts) and \
                    not path.name.endswith((".saving", ".old", ".part")):
                try:
                    tar.add(path, arcname=str(path.relative_to(root)))
                except FileNotFoundError:  # renamed away by a save since the listing: the next pack has it
                    pass
    partial.replace(archive)


class Packer:
    """Repacks root into archive every PACK_EVERY_S seconds and once at the end: a step killed at
    its time limit still brings back what finished."""

    def __init__(self, root: Path, archive: Path):
        self.root, self.archive, self.stop = root, archive, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.wait(PACK_EVERY_S):
            pack_records(self.root, self.archive)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()
        pack_records(self.root, self.archive)


def split_checkpoint(model_folder: Path, out: Path, name: str) -> list[Path]:
    """model_folder's weights in fp16, cut into parts under PART_SIZE: out/<name>.part00, ..."""
    whole = out / f"{name}.safetensors"
    save_file(cast(load_file(model_folder / "model.safetensors"), torch.float16), whole)
    data, parts = whole.read_bytes(), []
    whole.unlink()
    for n, start in enumerate(range(0, len(data), PART_SIZE)):
        parts.append(out / f"{name}.part{n:02d}")
        parts[-1].write_bytes(data[start:start + PART_SIZE])
    return parts


def join_checkpoint(returned: Path, target: Path) -> Path:
    """A Hugging Face classifier folder at target from a step's returned files: the parts joined,
    the weights in fp32, the configuration and tokenizer from the records archive."""
    parts = sorted(returned.glob("*.part[0-9][0-9]"))
    if not parts:
        raise UsageError(f"{returned} holds no checkpoint parts (<step>-<run>.partNN)")
    name = parts[0].name.rsplit(".part", 1)[0]
    step, run = name.split("-", 1)
    if target.exists():
        raise UsageError(f"{target} exists already: pass a new folder")
    if not (returned / f"{step}.tar.xz").is_file():
        raise UsageError(f"{returned} lacks {step}.tar.xz, which holds the configuration and tokenizer of {name}")
    with tempfile.TemporaryDirectory() as scratch:
        whole = Path(scratch) / "model.safetensors"
        whole.write_bytes(b"".join(p.read_bytes() for p in sorted(returned.glob(f"{name}.part[0-9][0-9]"))))
        try:
            weights = load_file(whole)
        except Exception as err:  # a missing or cut part: safetensors' header no longer matches
            raise UsageError(f"the parts of {name} do not join into a checkpoint ({err}): copy them again") from None
        with tarfile.open(returned / f"{step}.tar.xz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(f"{run}/model/")]
            if not members:
                raise UsageError(f"{returned}/{step}.tar.xz has no {run}/model/ (the configuration and tokenizer)")
            for member in members:
                destination = target / member.name.removeprefix(f"{run}/model/")
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(tar.extractfile(member).read())
        save_file(cast(weights, torch.float32), target / "model.safetensors")
    print(f"{target}: {name} as a Hugging Face classifier folder (fp32 of fp16-rounded weights)")
    return target


def recheck(model_folder: Path, run: Path) -> list[dict]:
    """Every text a run's attacks recorded (run/eval/*/adversarial.jsonl), scored again here in
    fp32 by model_folder (the run's kept checkpoint, joined): how many clean predictions agree with
    the GPU's, and how many reported successes still flip the model."""
    if not (run / "config.json").is_file() or not list(run.glob("eval/*/adversarial.jsonl")):
        raise UsageError(f"{run} holds no run records with attacks: pass runs/gpu/<step>/<run>, which `gpu file` unpacks")
    model, tokenizer = load_classifier(str(model_folder))
    model.eval()
    max_length = run_config(run)["resolved"]["max_length"]
    rows = []
    for records in sorted((run / "eval").glob("*/adversarial.jsonl")):
        attacked = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
        examples = [Example(tuple(r["original"].split()), r["label"], r["context"]) for r in attacked]
        clean = predict_proba(model, tokenizer, examples, max_length).argmax(-1).tolist()
        successes = [n for n, r in enumerate(attacked) if r["status"] == "successful"]
        flipped = predict_proba(model, tokenizer, [examples[n] for n in successes], max_length,
                                words=[tuple(attacked[n]["perturbed"].split()) for n in successes]).argmax(-1).tolist() \
            if successes else []
        rows.append({"evaluation": records.parent.name, "examples": len(attacked),
                     "clean_predictions_agreeing": sum(c == r["pred_before"] for c, r in zip(clean, attacked)),
                     "successes": len(successes),
                     "successes_still_flipping": sum(f != attacked[n]["label"] for f, n in zip(flipped, successes))})
    print(format_table(rows, {"evaluation": "evaluation", "examples": "examples",
                              "clean_predictions_agreeing": "clean predictions agreeing",
                              "successes": "successes", "successes_still_flipping": "still flipping here"}))
    return rows


def keep_model_files(run: Path) -> None:
    """run/model/: best/'s configuration and tokenizer (small), which travel in the records and
    make the returned weights a loadable folder again."""
    for path in (run / "best").iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            (run / "model").mkdir(exist_ok=True)
            shutil.copyfile(path, run / "model" / path.name)


# 500 test pairs (the same seed) as the CPU study, so the two pair example by example.
GPU_SNLI = Study(
    name="snli", command="experiments/gpu.py run snli", title="SNLI on a GPU: adv, FreeLB and rift with the paper's weights",
    design="Every run: all {max_train_examples:,} pairs of the shared SNLI train subset (a public copy whose labels "
           "were mapped by inspection), {model}, max "
           "length {max_length}, {max_steps} steps of {batch_size} (epochs: {epochs:.2g}), lr {lr}, alpha {alpha} and "
           "beta {beta} (the paper's), ASCC as the training adversary, bf16 autocast on one {gpu}; best/ the checkpoint "
           "with the best accuracy under ASCC on the same {select_examples} dev pairs at steps {selection_steps}. "
           "rift: critics at {critic_lr}, features `auto` (`S, T`). freelb: FreeLB with train.py's defaults, selected "
           "as the others. For adv and rift each term's pull on the encoder (the norm of its "
           "gradient, `--log-pulls`) is logged every 10 steps.",
    train=with_flags(SNLI.train, max_train_examples=20000, max_steps=2000, eval_every=500, save_every=500),
    runs=(Run("adv", "adv", SEED, ("--log-pulls",)), Run("freelb", "freelb", SEED, against="adv"),
          Run("rift", "rift", SEED, ("--log-pulls",), against="adv")),
    evaluations=attacked_on({"pwws_counterfitted": 500, "ascc": 500}),
    cka_examples=1000, train_file="snli/train_subset.tsv",
)
GPU_SNLI = replace(GPU_SNLI, smoke=dict(
    train=GPU_SNLI.train + SMOKE_TRAIN, cka_examples=16,
    evaluations=smoke_evaluations(GPU_SNLI.evaluations)))

# The pilot's recipe on all of SST-2's training sentences for two epochs; the same test sentences
# (seed 42) for every run, the first 500 of them the CPU pilot's.
SST2_SENTENCES = 67349
GPU_SST2 = Study(
    name="sst2", command="experiments/gpu.py run sst2", title="SST-2 on a GPU: adv, FreeLB and rift on every sentence",
    design="Every run: all {max_train_examples:,} SST-2 training sentences, {model}, max length {max_length}, "
           "{max_steps} steps of {batch_size} (epochs: {epochs:.2g}), lr {lr}, beta {beta} (the paper's), ASCC as "
           "the training adversary, bf16 autocast on one {gpu}; best/ the checkpoint with the best accuracy under "
           "ASCC on the same {select_examples} dev sentences at steps {selection_steps}. rift: alpha 0.1, critics at "
           "{critic_lr}, features `auto` (`S, T`). freelb: FreeLB with train.py's defaults, selected as the others.",
    train=with_flags(PILOT.train, max_train_examples=SST2_SENTENCES, max_steps=4 * (SST2_SENTENCES // 64),
                     eval_every=SST2_SENTENCES // 64, save_every=SST2_SENTENCES // 64),  # two epochs, four evaluations
    runs=(Run("adv", "adv", SEED), Run("freelb", "freelb", SEED, against="adv"),
          Run("rift", "rift", SEED, ("--alpha", "0.1"), against="adv")),
    evaluations=attacked_on({"pwws_counterfitted": 1000, "ascc": 1000, "genetic": 200}),
)
GPU_SST2 = replace(GPU_SST2, smoke=dict(
    train=GPU_SST2.train + SMOKE_TRAIN, cka_examples=16,
    evaluations=smoke_evaluations(GPU_SST2.evaluations)))
STUDY_STEPS = {study.name: study for study in (GPU_SNLI, GPU_SST2)}  # the steps that train and attack


# What a study's runs need besides their training steps (startups, dev evaluations, CKA, attacks),
# and how much slower each run steps beside the others than check_speed's quiet in-process step.
# Guesses until a GPU has run them: sst2 attacks twice the examples and runs the genetic search.
STUDY_RESERVE_S = {"snli": 120, "sst2": 300}
SIDE_BY_SIDE_SLOWDOWN = 1.3


def fitted_steps(study: Study, seconds: float, step_s: float) -> Study:
    """The study with as many training steps as fit in `seconds` at `step_s` per step (quiet,
    in-process) but no more than its own, evaluated and saved four times along the way."""
    planned = int(study.train[study.train.index("--max-steps") + 1])
    steps = max(4, min(planned, int((seconds - STUDY_RESERVE_S[study.name]) / (step_s * SIDE_BY_SIDE_SLOWDOWN)) // 4 * 4))
    return replace(study, train=with_flags(study.train, max_steps=steps, eval_every=steps // 4, save_every=steps // 4))


def study_step(study: Study, model: str, data_dir: str | None, root: Path, report: dict, out: Path) -> None:
    """A study's runs side by side (a small model leaves most of the GPU idle), each trained,
    measured and attacked as the CPU studies do; then the last run's checkpoint, in parts."""
    report["study"] = {"train": study.train, "runs": [vars(run) for run in study.runs],
                       "evaluations": study.evaluations}
    train_file = train_file_flags(study, data_dir)
    with ThreadPoolExecutor(len(study.runs)) as pool:
        report["finished"] = list(pool.map(lambda run: run_one(study, run, model, data_dir, root, train_file),
                                           study.runs))
    last = root / study.runs[-1].name
    keep_model_files(last)
    report["checkpoint_parts"] = [p.name for p in split_checkpoint(last / "best", out, f"{study.name}-{last.name}")]


def quiet_step_s(check: dict | None) -> float:
    """check's quiet rift/ASCC step time: from this command's check, else from the committed
    results/gpu/check.json (a study fitted without check in the same command)."""
    if check is None:
        committed = REPO / "results" / "gpu" / "check.json"
        if not committed.is_file():
            raise UsageError("--deadline-s needs check's speeds: run check in the same command (run check snli)")
        check = json.loads(committed.read_text())
    return min(row["s_per_step"] for row in check["training_speed"] if row["adversary"] == "ascc" and row["method"] == "rift")


def run_steps(steps: list[str], out: Path, bundle: Path | None, model: str, data_dir: str | None, smoke: bool,
              deadline_s: float | None) -> dict:
    """The steps in one command: check's speed measurement first on a quiet GPU, then its command
    lines and the study side by side. Each step's report goes to out/<step>.json and its records to
    out/<step>.tar.xz. With deadline_s the study trains as many of its steps as fit in what is left."""
    started, reports = time.time(), {}
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rift-gpu-"))
    os.environ.setdefault("TQDM_MININTERVAL", "15")  # progress lines for a log, not a terminal
    try:
        if bundle is not None:
            model, data_dir = unpack_bundle(bundle, work)
            model_note = f"{DEFAULT_MODEL} from the bundle (weights rounded to fp16 for the journey, trained in fp32)"
        else:
            model = smoke_model(work) if smoke else model
            model_note = model
        for step in steps:
            reports[step] = {"step": step, "smoke": smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                             "environment": environment(pick_device("auto")), "deadline_s": deadline_s,
                             "model": model_note}
            (work / step).mkdir()
        with ExitStack() as packers:
            for step in steps:
                packers.enter_context(Packer(work / step, out / f"{step}.tar.xz"))
            jobs = {}
            if "check" in steps:
                settings = CHECK_SMOKE if smoke else CHECK
                reports["check"]["settings"] = settings
                check_speed(model, data_dir, work / "check", settings, reports["check"])
                jobs["check"] = lambda: check_paths(model, data_dir, work / "check", settings, reports["check"])
            for step in [step for step in steps if step in STUDY_STEPS]:
                study = replace(STUDY_STEPS[step], **STUDY_STEPS[step].smoke) if smoke else STUDY_STEPS[step]
                if deadline_s is not None:
                    study = fitted_steps(study, deadline_s - (time.time() - started), quiet_step_s(reports.get("check")))
                jobs[step] = partial(study_step, study, model, data_dir, work / step, reports[step], out)
            with ThreadPoolExecutor(len(jobs) or 1) as pool:
                futures = {step: pool.submit(job) for step, job in jobs.items()}
                for step, future in futures.items():
                    try:
                        future.result()
                    except Exception as err:  # one step's failure must not lose the other's report
                        reports[step]["error"] = f"{type(err).__name__}: {err}"
    finally:
        for step, report in reports.items():
            report["seconds"] = round(time.time() - started, 1)
            (out / f"{step}.json").write_text(json.dumps(report, indent=2, default=str))
        shutil.rmtree(work, ignore_errors=True)
    print(f"{' and '.join(steps)}: {time.time() - started:.0f} s -> {out}")
    return reports


# ---------------------------------------------------------------------------------------------
# Back here: file what came back

def file_steps(returned: Path, results: Path, runs: Path) -> list[str]:
    """Each step report in `returned`, with its records, under results/gpu/ with its page; the
    records also unpacked to runs/gpu/<step>/ (where `join` and the CPU re-checks find them)."""
    reports = [json.loads(path.read_text()) for path in sorted(returned.glob("*.json"))]
    reports = [report for report in reports if isinstance(report, dict) and report.get("step") in STEPS]
    if not reports:
        raise UsageError(f"{returned} holds no step report (<step>.json): pass the folder the GPU step wrote to")
    folder = results / "gpu"
    folder.mkdir(parents=True, exist_ok=True)
    for report in reports:
        step = report["step"]
        shutil.copyfile(returned / f"{step}.json", folder / f"{step}.json")
        root = runs / "gpu" / step
        if (returned / f"{step}.tar.xz").is_file():
            root.mkdir(parents=True, exist_ok=True)
            with tarfile.open(returned / f"{step}.tar.xz") as tar:
                tar.extractall(root, filter="data")
        if step == "check":
            write_check_page(report, folder / "check.md")
        elif "study" in report:  # the steps the run fitted in, the command, model and GPU as it recorded them
            planned = STUDY_STEPS[step]
            study = replace(planned, train=tuple(report["study"]["train"]), command=report["environment"]["command"],
                            design=planned.design.replace("{model}", report["model"]).replace(
                                "{gpu}", str(report["environment"]["gpu"])))
            for run in study.runs:
                copy_records(root / run.name, folder / study.name / run.name)
            write_paired(study, root, folder)
        print(f"{step}: filed under {folder}")
    return [report["step"] for report in reports]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True)
    bundle = actions.add_parser("bundle", help="gpu/: the model (fp16) and the steps' data (xz) that travel")
    bundle.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="the steps whose data to bundle (default: all of them)")
    bundle.add_argument("--folder", type=Path, default=Path("gpu"), help="(default: %(default)s)")
    bundle.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder (default: %(default)s)")
    runner = actions.add_parser("run", help="steps on the GPU machine (check first: the others use its speeds)")
    runner.add_argument("steps", nargs="+", choices=STEPS, help="the steps, in one command")
    runner.add_argument("--out", type=Path, required=True, help="where the reports, records and checkpoint go ($OUT)")
    runner.add_argument("--bundle", type=Path, help="the bundle to run from (make gpu-bundle); without it, --model "
                                                    "and the data folders as everywhere")
    runner.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder without --bundle "
                                                               "(default: %(default)s)")
    runner.add_argument("--deadline-s", type=at_least(1.0, float),
                        help="seconds the whole command may take: a study then trains as many of its steps as fit, "
                             "from check's speeds (default: no limit, every step)")
    runner.add_argument("--smoke", action="store_true", help="a tiny random model, a few steps and examples")
    for action in (bundle, runner):
        action.add_argument("--data-dir", help="folder holding the data sets (else $RIFT_DATA, else the cache)")
    filing = actions.add_parser("file", help="a step's returned folder -> results/gpu/<step>.* (and runs/gpu/<step>/)")
    filing.add_argument("returned", type=Path, help="the folder the step wrote to")
    filing.add_argument("--results-dir", type=Path, default=Path("results"), help="(default: %(default)s)")
    filing.add_argument("--runs", type=Path, default=Path("runs"), help="(default: %(default)s)")
    join = actions.add_parser("join", help="the checkpoint parts a step brought back -> a Hugging Face folder")
    join.add_argument("returned", type=Path, help="the folder the step wrote to")
    join.add_argument("target", type=Path, help="the model folder to write (must not exist)")
    recheck = actions.add_parser("recheck", help="a joined checkpoint scores its run's attacked texts again here")
    recheck.add_argument("model", type=Path, help="the model folder `join` wrote")
    recheck.add_argument("run", type=Path, help="the run's records (runs/gpu/<step>/<run>, which `file` unpacked)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.action == "bundle":
        make_bundle(args.folder, tuple(args.steps), args.model, args.data_dir)
    elif args.action == "file":
        file_steps(args.returned, args.results_dir, args.runs)
    elif args.action == "join":
        join_checkpoint(args.returned, args.target)
    elif args.action == "recheck":
        recheck(args.model, args.run)
    else:
        run_steps(args.steps, args.out, args.bundle, args.model, args.data_dir, args.smoke, args.deadline_s)


if __name__ == "__main__":
    run_command(main)
