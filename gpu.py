"""rift on a GPU: self-contained steps for a machine with one, and the commands that file what they
bring back (bench.py is their command line: python bench.py gpu --help).

    make gpu-bundle                   # gpu/: what a step needs beyond the tracked tree
    python3 bench.py gpu run check snli --bundle gpu --out OUT --deadline-s 540
                                      # on the GPU machine: the CUDA paths and their speed, then adv
                                      # and rift on SNLI at ten times the CPU study, as far as fits
    python bench.py gpu file OUT      # back here: OUT -> results/gpu/
    python bench.py gpu join OUT runs/gpu-snli-rift   # the checkpoint brought back -> a model folder
    python bench.py gpu recheck runs/gpu-snli-rift runs/gpu/snli/rift   # its GPU verdicts scored here

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

import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import attacks
import synonyms
from adversaries import ASCC, neighbour_table
from cli import environment, format_table, pick_device
from costs import training_cost
from data import TASKS, Example, UsageError, load_split, locate
from rift import DEFAULT_MODEL, load_classifier, model_path, predict_proba
from runner import tiny_model, trained, training_log
from studies import ASCC, PWWS_COUNTERFITTED, SMOKE_TRAIN, Run, Study, run_one, train_file_flags, write_study

TRAVEL_LIMIT = 64 * 2**20  # what may travel to the machine: the tracked tree and the bundle
PART_SIZE = 15 * 2**20  # a returned file's limit is 16 MiB
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
               "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
STEP_DATA = {  # the data files each step reads, under the data folders
    "check": ("sst2/train.tsv", "sst2/dev.tsv", "sst2/test.tsv", "synonyms/counterfitted_neighbors.json"),
    "snli": ("snli/train_subset.tsv", "snli/dev.tsv", "snli/test.tsv", "synonyms/counterfitted_neighbors.json"),
}
STEPS = tuple(STEP_DATA)
PACK_EVERY_S = 60
REPO = Path(__file__).resolve().parent

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
    max_length = json.loads((run / "config.json").read_text())["resolved"]["max_length"]
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


# ---------------------------------------------------------------------------------------------
# The steps

def timed_command(command: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run a command line with a time limit; its output to log. Returns what a report keeps."""
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
    tail = log.read_text(errors="replace")[-1500:]
    return {"command": " ".join(command), "returncode": code, "seconds": round(time.perf_counter() - started, 1),
            "timed_out": time.perf_counter() - started >= timeout, "ok": code == 0, "output_tail": tail}


def steady_rate(run: Path, skip: int) -> float | None:
    """Training examples/s between the first logged step past `skip` and the last (compiling and
    warming up left out)."""
    lines = [line for line in training_log(run) if "loss" in line]
    config = json.loads((run / "config.json").read_text())["config"] if (run / "config.json").is_file() else None
    lines = [line for line in lines if line["step"] > skip]
    if config is None or len(lines) < 2:
        return None
    examples = (lines[-1]["step"] - lines[0]["step"]) * config["batch_size"] * config["grad_accum"]
    return examples / (lines[-1]["elapsed_s"] - lines[0]["elapsed_s"])


def attack_speed(run: Path, data_dir: str | None, n: int, table) -> list[dict]:
    """PWWS/counter-fitted and ASCC on the same n SST-2 test sentences (evaluate.py's draw, seed
    42), many examples at once and one at a time, in-process: examples/s, model calls/s, the share
    of wall time in the model, and how many outcomes differ from one at a time."""
    device = pick_device("auto")
    model, tokenizer = load_classifier(str(run / "best"))
    model.to(device).eval()
    test = load_split(TASKS["sst2"], "test", data_dir)
    examples = [test[i] for i in attacks.sample_examples(test, n, 42)]
    max_length, amp = TASKS["sst2"].max_length, device.type == "cuda"
    neighbours = neighbour_table(tokenizer, table).to(device)
    rows, outcomes = [], {}
    for search in ("pwws", "ascc"):
        for at_once in (32, 1):
            started = time.perf_counter()
            # PWWS's examples at once share the victim's batches; ASCC's go through the model together
            attack = attacks.WordAttack("pwws", table, at_once=at_once) if search == "pwws" else ASCC(neighbours)
            with attacks.Victim(model, tokenizer, max_length, 32 if search == "pwws" else at_once, amp) as victim:
                done = dict(attack.attack(victim, examples, [[0, k] for k in range(len(examples))]))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall = time.perf_counter() - started
                model_seconds = victim.model_seconds
            results = [done[k] for k in range(len(examples))]
            outcomes[search, at_once] = [r.status for r in results]
            summary = attacks.summarize([r.record() for r in results])
            rows.append({"attack": search, "examples_at_once": at_once, "examples": len(examples),
                         "wall_s": wall, "examples_per_s": len(examples) / wall,
                         "queries_per_s": sum(r.queries for r in results) / wall,
                         "model_calls_per_s": sum(r.model_calls for r in results) / wall,
                         "model_time_share": model_seconds / wall,
                         "accuracy_under_attack": summary["accuracy_under_attack"],
                         "outcomes_differing_from_one_at_a_time": None})
            print(f"{search} x{at_once}: {wall:.1f} s", flush=True)
    for row in rows:
        row["outcomes_differing_from_one_at_a_time"] = sum(
            a != b for a, b in zip(outcomes[row["attack"], row["examples_at_once"]], outcomes[row["attack"], 1]))
    return rows


CHECK = dict(train_examples=4000, batch_sizes=(32, 256), repeats=2, path_steps=20, standard_steps=200,
             attack_examples=200, compile_steps=30, compile_timeout_s=180)
CHECK_SMOKE = dict(CHECK, train_examples=200, batch_sizes=(8,), repeats=1, path_steps=3, standard_steps=4,
                   attack_examples=6, compile_steps=3)
TRAIN_METHODS = {"standard": ("--method", "standard"), "adv-pgd": ("--method", "adv", "--adversary", "pgd"),
                 "adv-ascc": ("--method", "adv", "--adversary", "ascc"),
                 "rift-pgd": ("--method", "rift", "--adversary", "pgd"),
                 "rift-ascc": ("--method", "rift", "--adversary", "ascc")}


def train_cli(root: Path, name: str, model: str, data: list[str], *flags, steps: int, launcher=None,
              timeout: float = 300, env: dict | None = None) -> dict:
    """train.py on SST-2 for `steps` steps into root/name: how it went, its summary, its steady speed."""
    out = root / name
    command = [*(launcher or [sys.executable]), str(REPO / "train.py"), "--task", "sst2", "--model", model, *data,
               "--max-steps", str(steps), "--log-every", "5" if steps >= 10 else "1", "--out", str(out), *flags]
    result = timed_command(command, root / f"{name}.log", timeout, env)
    result["summary"] = trained(out)
    result["steady_examples_per_s"] = steady_rate(out, skip=10 if steps > 20 else 0)
    return result


def check_speed(model: str, data_dir: str | None, root: Path, settings: dict, report: dict) -> None:
    """On a quiet GPU: (1) the training step of each method in-process (bench.py's cost
    measurement), at each batch size, under bf16 autocast; (2) a standard model fine-tuned for the
    attacks, then PWWS/counter-fitted and ASCC many examples at once against one at a time."""
    device = pick_device("auto")
    table, _ = synonyms.counterfitted_synonyms(None, data_dir)
    train = load_split(TASKS["sst2"], "train", data_dir)[:settings["train_examples"]]
    speed = []
    for adversary, steps in (("pgd", 3), ("ascc", 10)):
        for batch_size in settings["batch_sizes"]:
            started = time.perf_counter()
            rows = training_cost(model, train, device, batch_size, steps, 0.1, TASKS["sst2"].max_length,
                                 settings["repeats"], adversary, table, device.type == "cuda")
            speed += [{"adversary": adversary, "batch_size": batch_size, **row} for row in rows[:-1]]
            print(f"training speed, {adversary} batch {batch_size}: {time.perf_counter() - started:.0f} s", flush=True)
    report["training_speed"] = speed
    report["peak_gpu_memory_mb"] = max(row["peak_memory_mb"] for row in speed)
    data = ["--data-dir", data_dir] if data_dir else []
    report["checks"] = {"train-standard": train_cli(root, "standard", model, data, "--method", "standard",
                                                    "--select-on", "last", "--lr", "5e-5",
                                                    steps=settings["standard_steps"])}
    if report["checks"]["train-standard"]["ok"]:
        report["attack_speed"] = attack_speed(root / "standard", data_dir, settings["attack_examples"], table)


def check_paths(model: str, data_dir: str | None, root: Path, settings: dict, report: dict) -> None:
    """The command lines on CUDA, side by side (their speeds are not check_speed's): every method
    through train.py, eager and compiled; a stop and --resume against two uninterrupted runs; a
    one-process torchrun (NCCL); evaluate.py's PWWS/counter-fitted and ASCC; the CUDA tests."""
    data, n = (["--data-dir", data_dir] if data_dir else []), settings["path_steps"]
    workers = min(4, os.cpu_count() or 2)  # few at a time: a study may be training beside them
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // (workers + 2)))}
    train = lambda name, *flags, steps=n, **options: train_cli(root, name, model, data, *flags, steps=steps, env=env,
                                                                 **options)
    jobs = {f"train-{name}": (lambda name=name, flags=flags: train(name, *flags))
            for name, flags in TRAIN_METHODS.items() if name != "standard"}
    jobs["eager-rift-ascc"] = lambda: train("eager-rift-ascc", *TRAIN_METHODS["rift-ascc"],
                                            steps=settings["compile_steps"])
    jobs["compiled-rift-ascc"] = lambda: train("compiled-rift-ascc", *TRAIN_METHODS["rift-ascc"], "--compile",
                                               steps=settings["compile_steps"], timeout=settings["compile_timeout_s"])
    resume_flags = (*TRAIN_METHODS["rift-ascc"], "--save-every", str(max(n // 4, 1)), "--seed", "7")
    jobs["resume-whole"] = lambda: train("resume-whole", *resume_flags)
    jobs["resume-again"] = lambda: train("resume-again", *resume_flags)
    jobs["resume-stopped"] = lambda: stopped_and_resumed(root, model, data, resume_flags, n, env)
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    jobs["torchrun-1"] = lambda: train("torchrun-1", *TRAIN_METHODS["rift-ascc"],
                                       launcher=[*launcher, "--standalone", "--nproc-per-node", "1"])
    if (root / "standard" / "best").is_dir():
        for attack, flags in (("pwws_counterfitted", PWWS_COUNTERFITTED), ("ascc", ASCC)):
            jobs[f"evaluate-{attack}"] = lambda attack=attack, flags=flags: evaluate_cli(
                root, attack, flags, settings["attack_examples"], data, env)
    jobs["cuda-tests"] = lambda: timed_command([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                                str(REPO / "tests" / "test_cuda.py")], root / "cuda-tests.log", 300, env)
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        report["checks"] = report.get("checks", {}) | {name: future.result() for name, future in futures.items()}
    report["checks"]["resume-matches"] = compare_runs(root / "resume-whole", root / "resume-stopped",
                                                      root / "resume-again")


def evaluate_cli(root: Path, attack: str, flags: tuple, examples: int, data: list[str], env: dict) -> dict:
    """evaluate.py on the standard model check_speed trained; its metrics kept."""
    out = root / "standard" / "eval" / attack
    result = timed_command([sys.executable, str(REPO / "evaluate.py"), "--checkpoint", str(root / "standard"), *flags,
                            "--num-examples", str(examples), "--out", str(out), *data], root / f"evaluate-{attack}.log",
                           300, env)
    if (out / "results.json").is_file():
        result["metrics"] = json.loads((out / "results.json").read_text())["metrics"][-1]
    return result


def stopped_and_resumed(root: Path, model: str, data: list[str], flags: tuple, steps: int, env: dict) -> dict:
    """train.py stopped by SIGINT once it has logged half its steps, then --resume to the end."""
    out = root / "resume-stopped"
    command = [sys.executable, str(REPO / "train.py"), "--task", "sst2", "--model", model, *data, "--max-steps", str(steps),
               "--log-every", "1", "--out", str(out), *flags]
    started = time.perf_counter()
    with open(root / "resume-stopped.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        while process.poll() is None and len(training_log(out)) < max(steps // 2, 1):
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        first = process.wait()
    resumed = timed_command([sys.executable, str(REPO / "train.py"), "--resume", str(out), *data],
                            root / "resume-continued.log", 300, env)
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
    return {"first_leg_returncode": first, "stopped_at": [leg["step"] for leg in config.get("resumed", [])],
            "seconds": round(time.perf_counter() - started, 1), **{k: resumed[k] for k in ("returncode", "ok", "output_tail")}}


def compare_runs(whole: Path, stopped: Path, again: Path) -> dict:
    """The largest weight difference between an uninterrupted run and a stopped-and-resumed one,
    beside that between two uninterrupted runs (CUDA's atomics make even those differ)."""
    def weights(run):
        path = run / "last" / "model.safetensors"
        return load_file(path) if path.is_file() else None

    def largest(a, b):
        if a is None or b is None:
            return None
        return max((a[k].float() - b[k].float()).abs().max().item() for k in a)

    reference = weights(whole)
    resumed, repeated = largest(reference, weights(stopped)), largest(reference, weights(again))
    return {"max_abs_diff_resumed": resumed, "max_abs_diff_two_whole_runs": repeated,
            "bit_exact": resumed == 0.0 if resumed is not None else None,
            "ok": resumed is not None and repeated is not None and resumed <= max(repeated * 10, 1e-6)}


# SNLI at ten times the CPU study (results/snli.md): all 20,000 pairs of the shared subset, 2,000
# steps of 48, the paper's alpha 0.7 and beta 5, ASCC, robust selection every 500 steps; the same
# 500 test pairs (seed 42) as the CPU study, so the two pair example by example.
GPU_SNLI = Study(
    command="gpu run snli", name="snli", title="SNLI on a GPU: adv and rift with the paper's weights",
    design="Every run: all {max_train_examples:,} pairs of the shared SNLI train subset (a public copy whose labels "
           "were mapped by inspection), {model}, max "
           "length {max_length}, {max_steps} steps of {batch_size} (epochs: {epochs:.2g}), lr {lr}, alpha {alpha} and "
           "beta {beta} (the paper's), ASCC as the training adversary, bf16 autocast on one H200; best/ the checkpoint "
           "with the best accuracy under ASCC on the same {select_examples} dev pairs at steps {selection_steps}. "
           "rift: critics at {critic_lr}, features `auto` (`S, T`). Each term's pull on the encoder (the norm of its "
           "gradient, `--log-pulls`) is logged every 10 steps.",
    train=("--task", "snli", "--adversary", "ascc", "--alpha", "0.7", "--beta", "5", "--select-on", "robust",
           "--max-train-examples", "20000", "--max-steps", "2000", "--batch-size", "48", "--lr", "5e-5",
           "--eval-every", "500", "--save-every", "500"),
    runs=(Run("adv", "adv", 42, ("--log-pulls",)), Run("rift", "rift", 42, ("--log-pulls",), against="adv")),
    evaluations={"pwws_counterfitted": (PWWS_COUNTERFITTED, 500), "ascc": (ASCC, 500)},
    cka_examples=1000, train_file="snli/train_subset.tsv",
)
GPU_SNLI = replace(GPU_SNLI, smoke=dict(
    train=GPU_SNLI.train + SMOKE_TRAIN, cka_examples=16,
    evaluations={name: (flags, 4) for name, (flags, _) in GPU_SNLI.evaluations.items()}))


# What a study's runs need besides their training steps (startups, dev evaluations, CKA, attacks),
# and how much slower each run steps beside the others than check_speed's quiet in-process step.
STUDY_RESERVE_S = 120
SIDE_BY_SIDE_SLOWDOWN = 1.3


def fitted_steps(study: Study, seconds: float, step_s: float) -> Study:
    """The study with as many training steps as fit in `seconds` at `step_s` per step (quiet,
    in-process) but no more than its own, evaluated and saved four times along the way."""
    flags = list(study.train)
    planned = int(flags[flags.index("--max-steps") + 1])
    steps = max(4, min(planned, int((seconds - STUDY_RESERVE_S) / (step_s * SIDE_BY_SIDE_SLOWDOWN)) // 4 * 4))
    for flag, value in (("--max-steps", steps), ("--eval-every", steps // 4), ("--save-every", steps // 4)):
        flags[flags.index(flag) + 1] = str(value)
    return replace(study, train=tuple(flags))


def study_step(study: Study, model: str, data_dir: str | None, root: Path, report: dict, out: Path) -> None:
    """A study's runs side by side (a small model leaves most of the GPU idle), each trained,
    measured and attacked as `bench.py <study>` does; then the last run's checkpoint, in parts."""
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
            raise UsageError("--deadline-s needs check's speeds: run check in the same command (gpu run check snli)")
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
            model = tiny_model(work / "tiny-model") if smoke else model
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
            if "snli" in steps:
                study = replace(GPU_SNLI, **GPU_SNLI.smoke) if smoke else GPU_SNLI
                if deadline_s is not None:
                    study = fitted_steps(study, deadline_s - (time.time() - started), quiet_step_s(reports.get("check")))
                jobs["snli"] = lambda: study_step(study, model, data_dir, work / "snli", reports["snli"], out)
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
        elif "study" in report:  # the steps the run fitted in, the command and model as it recorded them
            command = report["environment"]["command"].removeprefix("bench.py ")
            write_study(replace(GPU_SNLI, train=tuple(report["study"]["train"]), command=command,
                                design=GPU_SNLI.design.replace("{model}", report["model"])), root, folder)
        print(f"{step}: filed under {folder}")
    return [report["step"] for report in reports]


def write_check_page(report: dict, path: Path) -> None:
    env = report["environment"]
    speed = [row | {"examples_per_s": round(row["examples_per_s"], 1), "peak_memory_mb": round(row["peak_memory_mb"])}
             for row in report.get("training_speed", [])]
    attacks = [{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
               for row in report.get("attack_speed", [])]
    checks = [{"check": name, "ok": c.get("ok"), "seconds": c.get("seconds"),
               "examples_per_s": round(c["steady_examples_per_s"], 1) if c.get("steady_examples_per_s") else None,
               "note": note(c)} for name, c in report.get("checks", {}).items()]
    text = (f"# rift on a GPU: the CUDA paths and their speed\n\nProduced by `python3 bench.py gpu run check ... --bundle "
            f"gpu --out OUT` on {env.get('gpu')} (torch {env.get('torch')}, transformers {env.get('transformers')}), "
            f"{report['started']}, {report['seconds']:.0f} s in all; filed with `python bench.py gpu file OUT`. "
            f"The model: {report['model']}. Settings: `{json.dumps(report.get('settings'))}`.\n\n"
            "## Training steps per second, in-process (bench.py's cost measurement), bf16 autocast\n\n"
            "SST-2 sentences at max length 64, each method timed in turns on the same 4 batches; PGD K=3, ASCC K=10; "
            "peak MB: CUDA's allocator peak after the method's warm-up pass.\n\n```\n"
            + format_table(speed, {"adversary": "adversary", "batch_size": "batch", "method": "method",
                                   "examples_per_s": "examples/s", "ratio_to_standard": "x standard",
                                   "measured_over_expected": "measured/expected", "peak_memory_mb": "peak MB"})
            + "\n```\n\n## Attacks, many examples at once against one at a time\n\n"
              f"PWWS with the counter-fitted table and ASCC on the same {report['settings']['attack_examples']} SST-2 "
              "test sentences (evaluate.py's draw, seed 42), in-process, bf16 search with the fp32 re-check, on a "
              "standard model fine-tuned here first (`train-standard` below); ASCC 'at once' is its batch. Time in "
              "model: PWWS's share of wall time inside the forward passes.\n\n```\n"
            + format_table(attacks, {"attack": "attack", "examples_at_once": "at once", "wall_s": "wall s",
                                     "examples_per_s": "examples/s", "queries_per_s": "queries/s",
                                     "model_calls_per_s": "model calls/s", "model_time_share": "time in model",
                                     "accuracy_under_attack": "acc under attack",
                                     "outcomes_differing_from_one_at_a_time": "outcomes != one at a time"})
            + "\n```\n\n## The command lines on CUDA\n\nRun side by side (their examples/s are not the speeds "
              "above: they share the GPU and include what each run does besides its steps).\n\n```\n"
            + format_table(checks, {"check": "check", "ok": "ok", "seconds": "s", "examples_per_s": "examples/s",
                                    "note": "note"}) + "\n```\n")
    from runner import write_page
    write_page(path, text)


def note(check: dict) -> str:
    if "max_abs_diff_resumed" in check:
        return (f"largest weight difference: resumed {check['max_abs_diff_resumed']}, two whole runs "
                f"{check['max_abs_diff_two_whole_runs']}")
    if "stopped_at" in check:
        return f"stopped at step {check['stopped_at']}, first leg exit {check['first_leg_returncode']}"
    if check.get("timed_out"):
        done = re.findall(r"(\d+)/(\d+) \[", check.get("output_tail", ""))
        return f"stopped at its {check['seconds']:.0f} s limit" + (f", {done[-1][0]} of {done[-1][1]} steps done" if done else "")
    if not check.get("ok"):
        return check.get("output_tail", "")[-200:].replace("\n", " | ")
    if "pytest" in check.get("command", ""):
        return check["output_tail"].strip().splitlines()[-1]
    return ""
