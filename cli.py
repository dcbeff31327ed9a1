"""What the three command lines (train.py, evaluate.py, bench.py) share.

Bad input is a data.UsageError, which `run_command` prints as one line `error: ...`; argparse
types refuse out-of-range numbers before anything runs, and the data flags of train.py and
evaluate.py are written once; the device, the newest run folder and the record of the environment
are found the same way by every command; results print as plain tables and, with the optional
matplotlib, as figures. The command lines import this module, and so do the studies under
experiments/, which print and plot its tables and figures; the library below them (data, rift,
adversaries, synonyms, attacks, checkpoints) does not.
"""

import argparse
import importlib.metadata
import math
import os
import platform
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import transformers

from data import LABEL_COLUMN, TEXT_COLUMN, Interrupted, Stopped, UsageError, failure_text


def run_command(main: Callable[[], object]) -> None:
    """Run a command line: transformers' warnings and download bars quiet, and bad input (a
    UsageError) or a failure of the machine (an OSError: disk full, read-only, permission denied)
    reported as one line `error: ...` and exit status 1, never a traceback. Ctrl-C and SIGTERM
    raise data.Interrupted where the command is, so that what holds a folder releases it and says
    what it kept (a data.Stopped); the exit status is the signal's, 128 + its number."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    try:
        main()
    except Stopped as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except UsageError as err:
        sys.exit(f"error: {err}")
    except Interrupted as stop:
        print(f"stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except OSError as err:
        sys.exit(f"error: {failure_text(err)}")


def interrupt(signum: int, frame) -> None:
    raise Interrupted(signum)


# ---------------------------------------------------------------------------------------------
# Arguments

def at_least(low: float, kind=int):
    """An argparse type: a finite number >= low, else argparse's one-line error."""
    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be a finite number of at least {low}, not {text}")
        return value
    return parse


def positive(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, not {text}")
    return value


SEED = 42  # every command's default --seed, and the studies' draw of test examples


def random_seed(text: str) -> int:
    """An argparse type: a seed every seeded library takes (numpy's are 0 to 2**32 - 1)."""
    value = int(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {2 ** 32 - 1}, not {text}")
    return value


def add_data_flags(group, *, labels: str, max_length: str, run: str = "") -> None:
    """The flags that say where a task's files are and how to read a custom task's (train.py's and
    evaluate.py's alike); `labels`, `max_length` and `run` (where a run's own columns come first)
    say what their defaults are for that command."""
    group.add_argument("--data-dir", help="folder holding <task>/<split>.tsv (else $RIFT_DATA, else the cache)")
    group.add_argument("--text-column", help=f"custom task: column of the text, the one attacks change (default: "
                                              f"{TEXT_COLUMN}{run})")
    group.add_argument("--label-column", help=f"custom task: column of the label (default: {LABEL_COLUMN}{run})")
    group.add_argument("--context-column", help="custom task: column of a first sentence that is never attacked")
    group.add_argument("--labels", help=f"custom task: label values in class order, comma-separated (default: {labels})")
    group.add_argument("--max-length", type=at_least(1), help=f"tokens per example (default: {max_length})")


def newest_run(root: str = "runs") -> Path | None:
    """The newest train.py run folder (one with a best/ checkpoint) under root."""
    runs = sorted(Path(root).glob("*/best"), key=lambda best: best.stat().st_mtime)
    return runs[-1].parent if runs else None


# ---------------------------------------------------------------------------------------------
# The machine

def pick_device(flag: str) -> torch.device:
    """--device: cuda, cpu, cuda:N, or auto (cuda when there is one). Under torchrun a GPU is the
    one of the process's local rank, so that each process has a GPU of its own."""
    if flag == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(flag)
    except RuntimeError:
        raise UsageError(f"--device {flag} is not a device: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {flag}, but torch sees no CUDA device")
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def process_group(backend: str, timeout: timedelta | None = None) -> tuple[int, int]:
    """(rank, world size): under torchrun this process joins the others (backend nccl or gloo);
    alone, (0, 1)."""
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group(backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def from_rank_zero(value):
    """Rank 0's value (any picklable object) on every process; alone, the value itself."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def default_amp(device: torch.device) -> bool:
    """bf16 autocast by default where the hardware runs it natively: CUDA, and CPUs with AVX512-BF16
    or AMX (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def environment(device: torch.device) -> dict:
    """What a reader needs to reproduce a result: versions, machine, code revision, command."""
    def git(*args: str) -> str:
        try:  # a copy of the tree without git (a lent GPU machine's) records no revision
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
        except OSError:
            return ""
    commit = git("rev-parse", "HEAD") or None
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": importlib.metadata.version("transformers"), "numpy": importlib.metadata.version("numpy"),
            "platform": platform.platform(), "cpus": os.cpu_count(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "git_commit": commit, "command": " ".join(sys.argv),
            "date": datetime.now().isoformat(timespec="seconds")}


# ---------------------------------------------------------------------------------------------
# Reporting

def format_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A plain-text table: one line per row, `columns` maps each key to its heading. Floats get
    4 significant digits; missing values show as '-'."""
    def cell(value) -> str:
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
    table = [list(columns.values())] + [[cell(row.get(key)) for key in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in table]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def pyplot():
    """matplotlib's pyplot, drawing to files; matplotlib is an optional extra."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib: pip install -r requirements-extra.txt") from None
    return plt


def save_figure(figure, path) -> None:
    """Write a figure at the one resolution every page uses, and close it: a study redraws its
    figure after every attack, and pyplot keeps each open figure until it is closed."""
    figure.savefig(path, dpi=120)
    pyplot().close(figure)
