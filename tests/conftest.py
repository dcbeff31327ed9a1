"""Shared fixtures: a tiny random encoder, the shared data folder, a CLI runner and its error check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the core lives at the repository root
sys.path.insert(1, str(REPO / "experiments"))  # the laboratory's scripts, imported by their names

SHARED_DATA = Path(os.environ.get("RIFT_DATA") or REPO.parent / "shared" / "data")

# The two tiers. `slow` tests run a command line in a subprocess, as a user would, or a real model
# on the real data (seconds each); the rest are the maths and the units, in-process (`make test-fast`,
# `pytest -m "not slow"`). A test that starts a command line without the mark fails, so the fast
# tier stays what it says.
COMMAND_LINES = ("train.py", "evaluate.py", "bench.py", "torchrun", "run.sh")


def is_command_line(word: str) -> bool:
    return Path(word).name in COMMAND_LINES or Path(word).parent.name == "experiments"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs a command line in a subprocess, or a real model on the real data")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("slow"):
        yield
        return
    popen = subprocess.Popen

    def unmarked(args, *rest, **options):
        words = [str(word) for word in (args if isinstance(args, (list, tuple)) else [args])]
        if any(is_command_line(word) for word in words):
            raise RuntimeError(f"this test starts {Path(words[0]).name} {' '.join(words[1:2])}: mark it @pytest.mark.slow")
        return popen(args, *rest, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", unmarked)
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only public data sets; tests that need them skip (visibly) where they are absent."""
    if not (SHARED_DATA / "sst2").is_dir():
        pytest.skip(f"no shared data at {SHARED_DATA}: set RIFT_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT encoder with the default model's tokenizer, saved as a
    pre-trained folder: every model test runs in milliseconds on it."""
    import costs

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    return Path(costs.tiny_model(folder))  # the smoke runs' model, here with fixed weights


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model, tmp_path_factory) -> Path:
    """The tiny encoder with a random head: a classifier folder without a train.py run."""
    import costs

    return Path(costs.tiny_classifier(str(tiny_model), tmp_path_factory.mktemp("tiny-classifier")))


@pytest.fixture(scope="session")
def torchrun() -> list[str]:
    """The launcher of two processes on this machine (gloo on CPUs), as run_cli's launcher."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sys.executable}")
    return [str(torchrun), "--standalone", "--nproc-per-node", "2"]


def run_cli(*args, cache: Path | None = None, script: str = "train.py", launcher: list[str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the project's command lines in the repository root, as a user would.

    cache: a folder for $RIFT_CACHE, for runs that must not touch the user's cache."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    if cache is not None:
        env["RIFT_CACHE"] = str(cache)
    command = (launcher or [sys.executable]) + [script, *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def write_outcomes(folder: Path, statuses: dict[int, str]) -> None:
    """An evaluation's adversarial.jsonl with only what the studies read: test index -> status."""
    folder.mkdir(parents=True)
    (folder / "adversarial.jsonl").write_text("".join(json.dumps({"index": i, "status": s}) + "\n"
                                                      for i, s in statuses.items()))


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A bad input's contract: a non-zero exit and one line `error: ...` naming the way out, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def cli():
    return run_cli
