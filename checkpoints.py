"""Checkpoints and the run folder they live in. best/ is a standard Hugging Face model folder
(config with the label names, safetensors, tokenizer) that AutoModelForSequenceClassification loads.
last/ is one too, plus all a resumed run needs to end as if it had never stopped: the critics and
AdamW moments as safetensors, everything else (optimiser groups, schedule, step, best dev accuracy,
open metrics window, every process's random states) as JSON. Nothing is pickled, so a checkpoint
from anywhere is safe to load. Folders are written whole or not at all.

Every output folder has one writer (`writing`): it is made whole or refused, held with an advisory
lock while its process lives, and a failure of the machine or a stop inside it ends in one line that
says what the folder kept. `RunFolder` is train.py's run folder (config.json, metrics.jsonl, best/,
last/, summary.json) as every process of a run sees it: opening a new run or resuming one, and
saving as the loop goes.
"""

import argparse
import fcntl
import json
import os
import random
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data import Interrupted, Stopped, UsageError, failure_text, read_text
from rift import load_classifier


# ---------------------------------------------------------------------------------------------
# One writer per folder

LOCK = ".lock"  # <folder>/.lock holds the writer's pid, flock-ed while the writer lives


def hold_folder(folder: Path, new: bool):
    """Make `folder` (new: it must not exist, or be empty) or open it (resuming), and hold it: the
    returned file keeps an advisory lock that the kernel releases however the process ends. A
    second writer, a resume included, is refused with the holder's pid, and a folder refused is
    left as it was."""
    def occupied() -> bool:
        return any(path.name != LOCK for path in folder.iterdir())

    if new:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise UsageError(f"{folder} is a file; pass a new --out") from None
            if occupied():
                raise UsageError(f"{folder} already exists; pass a new --out, or --resume {folder}") from None
    lock = open(folder / LOCK, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise UsageError(f"{folder} is being written by process {holder}; wait for it to end, or pass "
                         "another --out") from None
    try:  # a writer that let go in between removed the file this lock is on
        current = os.stat(folder / LOCK).st_ino == os.fstat(lock.fileno()).st_ino
    except FileNotFoundError:
        current = False
    if not current or (new and occupied()):  # checked under the lock: no race
        lock.close()
        raise UsageError(f"{folder} was being written by another process; pass a new --out, or --resume {folder}")
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def release_folder(lock, folder: Path, made: bool) -> None:
    """Let go of a held folder, the lock file removed while still held; one this writer made and
    left with nothing in it goes too."""
    (folder / LOCK).unlink(missing_ok=True)
    if made and not any(folder.iterdir()):
        folder.rmdir()
    lock.close()


@contextmanager
def writing(folder: Path, new: bool, is_main: bool, kept: Callable[[], str]):
    """The block writes `folder` as its one writer (the main process holds it: `hold_folder`). A
    failure of the machine or a stop (Ctrl-C, SIGTERM) inside it becomes one line that says what
    happened and what kept() reports: what the folder holds, and how to go on."""
    lock = hold_folder(folder, new) if is_main else None
    try:
        yield
    except Interrupted as stop:
        raise Stopped(f"stopped by {signal.Signals(stop.signum).name}; {kept()}", stop.signum) from None
    except OSError as err:
        raise UsageError(f"{failure_text(err)}; {kept()}") from None
    finally:
        if lock:
            release_folder(lock, folder, new)


# ---------------------------------------------------------------------------------------------
# Writing folders whole

def replace_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """write(staging) fills a folder beside `folder`, which is synced to disk and renamed into its
    place. A kill at any moment leaves the old folder or the new one whole: between the two renames
    the old one is <name>.old, which `recover_folder` puts back (here first, and before a read)."""
    staging, old = folder.with_name(folder.name + ".saving"), folder.with_name(folder.name + ".old")
    recover_folder(folder)
    for stale in (staging, old):  # a save killed half-way, or before its clean-up
        shutil.rmtree(stale, ignore_errors=True)
    try:
        write(staging)
        for path in [*staging.iterdir(), staging]:
            fsync(path)
    except BaseException as err:  # a full disk, a stop: the old folder stays, the half-written one goes
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, SafetensorError):  # how safetensors reports a failed write (a full disk)
            raise OSError(str(err).strip().splitlines()[0]) from None
        raise
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and old.exists():
        old.rename(folder)


def fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------------
# best/ and last/

STATE = "training_state"  # last/training_state.safetensors (critics, optimiser) and .json (the rest)


def save_model(model, tokenizer, folder: Path, labels: tuple[str, ...]) -> None:
    """A standard Hugging Face folder: config (with the label names), safetensors, tokenizer."""
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def save_training_state(folder: Path, model, tokenizer, labels: tuple[str, ...], critics, optimizer, scheduler,
                        progress: dict) -> None:
    """last/: the model as a Hugging Face folder and, beside it, the other tensors (critics, AdamW
    moments) as safetensors and everything else as JSON: the optimiser's groups, the schedule and
    `progress` (the step, which fixes the sampler's position, the best dev accuracy so far, the open
    metrics window, every process's random states). Nothing is pickled."""
    save_model(model, tokenizer, folder, labels)
    optim = optimizer.state_dict()
    tensors = {f"critics.{key}": value for key, value in (critics.state_dict() if critics else {}).items()}
    tensors |= {f"optimizer.{index}.{name}": value for index, state in optim["state"].items()
                for name, value in state.items()}
    save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()},
              folder / f"{STATE}.safetensors")
    (folder / f"{STATE}.json").write_text(json.dumps(
        progress | {"optimizer_groups": optim["param_groups"], "scheduler": scheduler.state_dict()}))


def drop_optimizer_state(folder: Path) -> None:
    """last/ without the optimiser's moments: the model, the critics and the loop's record stay."""
    path = folder / f"{STATE}.safetensors"
    kept = {key: value for key, value in load_file(path).items() if not key.startswith("optimizer.")}
    part = path.with_name(path.name + ".part")
    save_file(kept, part)
    part.replace(path)


def load_training_state(folder: Path, model, critics, optimizer, scheduler) -> dict:
    """Put last/'s weights and state into the freshly built run; returns its `progress`."""
    try:
        progress = json.loads(read_text(folder / f"{STATE}.json"))
        tensors = load_file(folder / f"{STATE}.safetensors")
        model.load_state_dict(load_classifier(str(folder))[0].state_dict())
        if critics:
            critics.load_state_dict({key.removeprefix("critics."): value for key, value in tensors.items()
                                     if key.startswith("critics.")})
        state = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": progress["optimizer_groups"]})
        scheduler.load_state_dict(progress["scheduler"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UsageError(f"{folder} is not a whole training state ({reason}); a run cannot resume from it") from None
    return progress


def gathered_random_states(device: torch.device, world_size: int) -> list[dict]:
    """Every process's random states, for rank 0 to save: each process draws its own dropout."""
    if world_size == 1:
        return [random_states(device)]
    every = [None] * world_size
    dist.all_gather_object(every, random_states(device))
    return every


def random_states(device: torch.device) -> dict:
    """Python's, NumPy's and torch's generators (the device's too): dropout and the PGD start draw on them."""
    numpy_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "torch": torch.get_rng_state().tolist(),
            "cuda": torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None}


def set_random_states(states: dict, device: torch.device) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if device.type == "cuda":
        torch.cuda.set_rng_state(torch.tensor(states["cuda"], dtype=torch.uint8), device)


# ---------------------------------------------------------------------------------------------
# The run folder: a new run or a resumed one, and what the loop saves in it

# A resumed run may change where its data is and how often it reports; every other setting changes
# the arithmetic (the batches, the schedule, the loss) and must stay as the run began.
RESUME_MAY_CHANGE = ("data_dir", "device", "log_every", "log_pulls", "eval_every", "save_every", "keep_state")
FLAGS_RESUME_MAY_CHANGE = ["--" + key.replace("_", "-") for key in RESUME_MAY_CHANGE]


def resumed_settings(run: str, given: dict, defaults: dict) -> argparse.Namespace:
    """The settings RUN/config.json recorded, with those of the flags given now that may change."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume {run}: no train.py run there (it has no config.json)")
    try:
        saved = defaults | json.loads(read_text(path))["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"{path} is not a train.py run configuration ({err!r})") from None
    if "out" in given:
        raise UsageError("--resume continues a run in its own folder: drop --out")
    for key, value in given.items():
        if key not in ("resume", *RESUME_MAY_CHANGE) and value != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} {value} differs from the run's {saved[key]}: a resumed run keeps every setting "
                             f"that changes its arithmetic; drop {flag}, or start a new run")
    changed = {key: value for key, value in given.items() if key in RESUME_MAY_CHANGE}
    return argparse.Namespace(**(saved | changed | {"resume": run}))


@dataclass
class LoopState:
    """What the training loop carries from step to step besides the weights, the optimiser and the
    schedule. last/ saves it beside them, so that a resumed run logs and selects as one never stopped."""
    best: dict = field(default_factory=lambda: {"step": 0})  # the evaluation best/ holds (step 0: none yet)
    record: dict = field(default_factory=dict)  # the last log line's means of the terms
    dev_accuracy: float | None = None  # the last evaluation's
    window: dict = field(default_factory=dict)  # each term summed (a tensor) over the steps since the last log line
    steps_in_window: int = 0
    train_seconds: float = 0.0  # training time at the last log line

    @classmethod
    def restored(cls, progress: dict, device: torch.device) -> "LoopState":
        window = {name: torch.tensor(value, device=device) for name, value in progress["window"].items()}
        return cls(progress["best"], progress["record"], progress["dev_accuracy"], window,
                   progress["steps_in_window"], progress["train_seconds"])

    def close_window(self) -> None:
        """The window's means become `record`, the last log line's; the next window starts empty."""
        self.record = {name: value.item() / self.steps_in_window for name, value in self.window.items()}
        self.window, self.steps_in_window = {}, 0

    def progress(self, step: int, train_seconds: float) -> dict:
        """last/'s record of the loop after `step`: the window's sums as numbers (.item() waits for the device)."""
        return {"step": step, "best": self.best, "record": self.record, "dev_accuracy": self.dev_accuracy,
                "window": {name: value.item() for name, value in self.window.items()},
                "steps_in_window": self.steps_in_window, "train_seconds": train_seconds}


def restored_loop(progress: dict, batches, grad_accum: int, rank: int, device: torch.device) -> LoopState:
    """The loop where last/ left it: its state, the sampler's position and this process's random states."""
    loop = LoopState.restored(progress, device)
    for _ in range(progress["step"] * grad_accum):  # the sampler replays its index lists (about 2 s per 10,000)
        next(batches)
    set_random_states(progress["random_states"][rank], device)  # last: nothing may draw after this
    return loop


class TrainingClock:
    """Training time: wall time less dev evaluations and saves, plus the legs before a resume."""

    def __init__(self, prior_seconds: float, device: torch.device):
        self.prior_seconds, self.started, self.paused_seconds = prior_seconds, time.perf_counter(), 0.0
        self.device = device

    def seconds(self, now: float | None = None) -> float:
        return self.prior_seconds + (time.perf_counter() if now is None else now) - self.started - self.paused_seconds

    @contextmanager
    def paused(self):
        """The block's time is not training time; it gets the training seconds at its start."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the training work still queued on the GPU is training time
        paused_at = time.perf_counter()
        yield self.seconds(paused_at)
        self.paused_seconds += time.perf_counter() - paused_at


class RunFolder:
    """A train.py run folder as every process of the run sees it, for the life of a `with` block:
    rank 0 alone writes, holding the folder (`writing`); at each barrier the others wait for it, so
    that none reads what is half written or leaves before it."""

    def __init__(self, path: Path, resuming: bool, rank: int, world_size: int):
        self.path, self.resuming, self.rank, self.world_size = path, resuming, rank, world_size
        self.is_main = rank == 0
        self.config = None  # config.json: read by check_resumable, (re)written by begin
        self.metrics = None  # metrics.jsonl, open for appending on rank 0 from begin on
        self.saved_step = 0  # the step last/ holds
        self.held = writing(path, not resuming, self.is_main, self.kept)

    def __enter__(self) -> "RunFolder":
        self.held.__enter__()
        return self

    def __exit__(self, *exception) -> bool | None:
        if self.metrics:
            self.metrics.close()
        return self.held.__exit__(*exception)

    def resume_command(self) -> str:
        launcher = f"torchrun --nproc-per-node {self.world_size}" if self.world_size > 1 else "python"
        return f"{launcher} train.py --resume {self.path}"

    def kept(self) -> str:
        """What survives the run stopping now, and how to go on."""
        if self.saved_step:
            return f"last/ holds step {self.saved_step}: continue with {self.resume_command()}"
        return f"no step was saved in {self.path}: start the run again with a new --out"

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def check_resumable(self, resolved: dict, device: torch.device, save_every: int) -> None:
        """Refuses a run that cannot continue here exactly: finished, on other data or schedule, on
        another number of processes or kind of device than it began with, or with no last/ yet."""
        config = json.loads(read_text(self.path / "config.json"))
        if (self.path / "summary.json").is_file():
            raise UsageError(f"{self.path} has finished (it has a summary.json): there is nothing to resume")
        now = json.loads(json.dumps(resolved))  # as config.json holds it (tuples as lists)
        then = config["resolved"] | {"world_size": config["environment"].get("world_size", 1),
                                     "device": torch.device(config["environment"]["device"]).type}
        now |= {"world_size": self.world_size, "device": device.type}
        for role, file in now.pop("data_files", {}).items():  # the files may move (--data-dir), not change
            began = then.get("data_files", {}).get(role)
            if began and began["sha256"] != file["sha256"]:
                raise UsageError(f"--resume {self.path}: its {role} file {file['path']} has changed since the run "
                                 f"began (sha256 {began['sha256'][:12]}..., now {file['sha256'][:12]}...); resume "
                                 "with the data it began on, or start a new run")
        # A key only one side records is a setting an older rift did not record; every other must agree.
        for key in (key for key in now if key in then):
            if key != "model_path" and then[key] != now[key]:  # a package's folder may move, not --model
                raise UsageError(f"--resume {self.path}: its {key} was {then.get(key)}, here it is {now[key]}; resume "
                                 "it with the same data and on the same kind of machine")
        if self.is_main:  # a kill between a save's two renames left the previous folder as <name>.old
            for name in ("best", "last"):
                recover_folder(self.path / name)
        self.barrier()
        if not (self.path / "last" / f"{STATE}.json").is_file():
            raise UsageError(f"{self.path} has no last/ to resume from: it stopped before its first save (every "
                             f"--save-every {save_every} steps); start it again with a new --out")
        self.config = config

    def begin(self, settings: dict, resolved: dict, progress: dict | None, environment: Callable[[], dict]) -> None:
        """Write config.json (a resumed run adds this leg, at the step of `progress`, to the record)
        and open metrics.jsonl; environment() describes the machine, on rank 0 alone."""
        self.saved_step = progress["step"] if progress else 0
        if not self.is_main:
            return
        here = environment() | {"world_size": self.world_size}
        if self.resuming:
            self.config["resumed"] = self.config.get("resumed", []) + [{"step": self.saved_step, "environment": here}]
        else:
            self.config = {"config": settings, "resolved": resolved, "environment": here}
        part = self.path / "config.json.part"  # replaced whole, as a resumed run rewrites it
        part.write_text(json.dumps(self.config, indent=2))
        part.replace(self.path / "config.json")
        if self.resuming:  # lines logged after last/ was saved belong to steps that run again
            with open(self.path / "metrics.jsonl", "r+b") as f:
                if f.seek(0, os.SEEK_END) < progress["metrics_bytes"]:
                    raise UsageError(f"{self.path}/metrics.jsonl is shorter than when last/ was saved; it cannot resume")
                f.truncate(progress["metrics_bytes"])
        self.metrics = open(self.path / "metrics.jsonl", "a")

    def log(self, record: dict) -> None:
        """A line of metrics.jsonl, from rank 0; the other processes' records go nowhere."""
        if self.is_main:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    def save_best(self, model, tokenizer, labels: tuple[str, ...]) -> None:
        """best/, from rank 0 alone."""
        replace_folder(self.path / "best", lambda folder: save_model(model, tokenizer, folder, labels))

    def save_last(self, progress: dict, model, tokenizer, labels: tuple[str, ...], critics, optimizer, scheduler,
                  device: torch.device) -> None:
        """last/, by every process together: rank 0 saves `progress` with every process's random
        states and the length metrics.jsonl has on disk then, which a resumed run cuts it back to."""
        progress = progress | {"random_states": gathered_random_states(device, self.world_size)}
        if self.is_main:
            self.metrics.flush()
            os.fsync(self.metrics.fileno())
            progress["metrics_bytes"] = self.metrics.tell()
            replace_folder(self.path / "last", lambda folder: save_training_state(
                folder, model, tokenizer, labels, critics, optimizer, scheduler, progress))
        self.barrier()  # no process leaves before rank 0 has written
        self.saved_step = progress["step"]

    def finish(self, summary: dict, keep_state: bool) -> None:
        """summary.json, which marks the run finished; then, unless keep_state, last/ lets go of
        AdamW's moments (twice the model's size), which only a resume reads and a finished run never
        resumes."""
        if self.is_main:
            (self.path / "summary.json").write_text(json.dumps(summary, indent=2))
            if not keep_state:
                drop_optimizer_state(self.path / "last")
