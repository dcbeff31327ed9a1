"""Nothing mixed, nothing silent: one writer per folder, checkpoints and data checked on load and on
resume, and every failure of the machine or stop in one line that says what was kept."""

import errno
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from textwrap import dedent

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import cli
import data
import eval_folder
import evaluate
import rift
import train
from checkpoints import LOCK, RunFolder, hold_folder, release_folder, replace_folder, writing
from conftest import assert_one_line_error, run_cli
from data import Interrupted, Stopped, UsageError

FULL_DISK = OSError(errno.ENOSPC, "No space left on device")


# ---------------------------------------------------------------------------------------------
# One writer per folder

def test_a_second_writer_of_a_held_folder_is_refused_with_the_holders_pid(tmp_path):
    lock = hold_folder(tmp_path / "run", new=True)
    for new in (True, False):  # another new run there, or a resume of it
        with pytest.raises(UsageError, match=f"being written by process {os.getpid()}"):
            hold_folder(tmp_path / "run", new)
    release_folder(lock, tmp_path / "run", made=False)
    assert [p.name for p in (tmp_path / "run").iterdir()] == []  # no lock file left behind
    release_folder(hold_folder(tmp_path / "run", new=True), tmp_path / "run", made=True)
    assert not (tmp_path / "run").exists()  # made, left empty: gone


def test_a_lock_on_the_file_a_leaving_writer_removed_holds_nothing(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    real = fcntl.flock

    def holder_lets_go_first(file, operation):  # between this writer's open and its lock
        (tmp_path / "run" / LOCK).unlink()
        real(file, operation)

    monkeypatch.setattr(fcntl, "flock", holder_lets_go_first)
    with pytest.raises(UsageError, match="was being written by another process"):
        hold_folder(tmp_path / "run", new=False)


def claim(folder: str, start, outcomes) -> None:
    """One of two writers started at once: hold the folder, write in it, hold on a while."""
    start.wait()
    try:
        lock = hold_folder(Path(folder), new=True)
    except UsageError as err:
        outcomes.put(str(err))
        return
    (Path(folder) / "config.json").write_text(str(os.getpid()))
    outcomes.put("held")
    time.sleep(0.3)
    release_folder(lock, Path(folder), made=True)


def test_of_two_writers_started_at_once_one_holds_the_folder_and_the_other_is_refused(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        start, outcomes = context.Event(), context.Queue()
        folder = tmp_path / f"run{attempt}"
        writers = [context.Process(target=claim, args=(str(folder), start, outcomes)) for _ in range(2)]
        for writer in writers:
            writer.start()
        start.set()
        for writer in writers:
            writer.join(30)
        refused, held = sorted(outcomes.get(timeout=5) for _ in writers)  # "/tmp/..." sorts before "held"
        assert held == "held" and ("being written by process" in refused or "already exists" in refused), refused


def test_a_folder_with_something_in_it_is_no_new_folder(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match=f"already exists; pass a new --out, or --resume {tmp_path / 'run'}"):
        hold_folder(tmp_path / "run", new=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        hold_folder(tmp_path / "file", new=True)
    (tmp_path / "empty").mkdir()  # an empty folder is new
    release_folder(hold_folder(tmp_path / "empty", new=True), tmp_path / "empty", made=False)
    assert [p.name for p in tmp_path.iterdir() if p.name == "empty"] == ["empty"]  # not made here: stays
    (tmp_path / "empty" / LOCK).write_text("12345")  # a lock file a killed writer left behind
    release_folder(hold_folder(tmp_path / "empty", new=True), tmp_path / "empty", made=True)
    assert not (tmp_path / "empty").exists()


def test_a_failure_of_the_machine_in_a_held_folder_is_one_line_with_what_was_kept(tmp_path):
    with pytest.raises(UsageError) as err:
        with writing(tmp_path / "out", True, True, lambda: "nothing kept"):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x"))
    assert str(err.value) == f"No space left on device: {tmp_path / 'out' / 'x'}; nothing kept"
    assert not (tmp_path / "out").exists()  # made here and left empty
    with pytest.raises(ValueError):  # a bug stays a bug, with its traceback
        with writing(tmp_path / "out", True, True, lambda: ""):
            raise ValueError("a bug")


def test_a_stop_in_a_held_folder_keeps_what_was_written_and_exits_with_the_signals_status(tmp_path):
    with pytest.raises(Stopped) as stop:
        with writing(tmp_path / "out", True, True, lambda: "3 lines kept"):
            (tmp_path / "out" / "lines.jsonl").write_text("{}\n")
            raise Interrupted(signal.SIGTERM)
    assert (str(stop.value), stop.value.signum) == ("stopped by SIGTERM; 3 lines kept", signal.SIGTERM)
    assert (tmp_path / "out" / "lines.jsonl").read_text() == "{}\n"
    hold_folder(tmp_path / "out", new=False).close()  # released


def test_a_save_that_fails_half_way_leaves_the_previous_folder_whole_and_no_saving_folder(tmp_path):
    folder = tmp_path / "last"

    def save(text, failure=None):
        def write(staging):
            staging.mkdir()
            (staging / "a").write_text(text)
            if failure:
                raise failure
        return write

    replace_folder(folder, save("old"))
    with pytest.raises(OSError, match="No space left"):
        replace_folder(folder, save("new", FULL_DISK))
    with pytest.raises(OSError, match="No space left on device"):  # as safetensors reports a full disk
        replace_folder(folder, save("new", SafetensorError("Error while serializing: IoError(Os { code: 28, "
                                                           "kind: StorageFull, message: \"No space left on device\" })")))
    with pytest.raises(Interrupted):
        replace_folder(folder, save("new", Interrupted(signal.SIGINT)))
    assert (folder / "a").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["last"]


@pytest.fixture
def handlers():
    """run_command installs its own Ctrl-C and SIGTERM handlers: the test process gets its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("failure,status,line", [
    (OSError(errno.EROFS, "Read-only file system", "/r/run"), 1, "error: Read-only file system: /r/run"),
    (PermissionError(errno.EACCES, "Permission denied", "/r/train.tsv"), 1, "error: Permission denied: /r/train.tsv"),
    (FULL_DISK, 1, "error: No space left on device"),
    (Interrupted(signal.SIGINT), 130, "stopped by SIGINT"),
    (Stopped("stopped by SIGTERM; last/ holds step 4", signal.SIGTERM), 143, "stopped by SIGTERM; last/ holds step 4"),
])
def test_a_command_ends_a_failure_or_a_stop_in_one_line_with_its_status(failure, status, line, handlers, capsys):
    def main():
        raise failure
    with pytest.raises(SystemExit) as exit:
        cli.run_command(main)
    code = exit.value.code
    said = code if isinstance(code, str) else capsys.readouterr().err.strip()  # sys.exit(text) exits 1
    assert (1 if isinstance(code, str) else code, said) == (status, line)


def test_sigterm_reaches_a_command_where_it_is_as_an_interruption(handlers, capsys):
    def main():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")
    with pytest.raises(SystemExit) as exit:
        cli.run_command(main)
    assert exit.value.code == 143 and capsys.readouterr().err.strip() == "stopped by SIGTERM"


# ---------------------------------------------------------------------------------------------
# Flags, paths and data checked

@pytest.mark.parametrize("parse", [train.parse_args, evaluate.parse_args])
@pytest.mark.parametrize("seed", ["-1", str(2 ** 32), "99999999999999999999999"])
def test_a_seed_no_seeded_library_takes_is_refused_by_argparse(parse, seed, capsys):
    with pytest.raises(SystemExit) as exit:
        parse(["--seed", seed])
    assert exit.value.code == 2 and "from 0 to 4294967295" in capsys.readouterr().err
    assert parse(["--seed", str(2 ** 32 - 1)]).seed == 2 ** 32 - 1
    train.seed_everything(2 ** 32 - 1)


def test_a_data_dir_that_is_no_folder_is_named_not_passed_over(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="--data-dir .*missing does not exist"):
        data.locate("sst2/train.tsv", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="--data-dir .*file is not a folder"):
        data.load_split(data.TASKS["sst2"], "train", str(tmp_path / "file"))
    monkeypatch.setenv("RIFT_DATA", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="RIFT_DATA .*missing does not exist"):
        data.locate("sst2/train.tsv")


def test_a_folder_given_as_a_data_file_is_said_to_be_a_folder(tmp_path):
    task = data.custom_task(None, None, None, ("0", "1"))
    with pytest.raises(UsageError, match="is a folder: name a .tsv, .csv or .jsonl file"):
        data.load_split(task, "train", file=str(tmp_path))


def test_a_class_the_training_data_lacks_is_named_not_blamed_on_the_batch_size():
    with pytest.raises(UsageError, match="no example of class 1"):
        data.balanced_batches([0, 0, 0, 0], 2, 2, seed=0)


def test_column_flags_win_over_the_runs_own_so_any_file_can_be_evaluated(tmp_path):
    (tmp_path / "f.tsv").write_text("sentence\tlabel\na b\t1\n")
    run_config = {"config": {"task": "custom", "text_column": "text", "label_column": "label", "context_column": None},
                  "resolved": {"labels": ["0", "1"], "max_length": 32}}
    args = evaluate.parse_args(["--task", "custom", "--file", str(tmp_path / "f.tsv"), "--text-column", "sentence"])
    task, _ = evaluate.resolve_task(args, run_config)
    assert (task.text_column, task.label_column, task.labels) == ("sentence", "label", ("0", "1"))
    assert data.load_split(task, "test", file=args.file)[0].words == ("a", "b")
    task, _ = evaluate.resolve_task(evaluate.parse_args(["--task", "custom", "--file", "f"]), run_config)
    assert task.text_column == "text"  # not given: the run's


def test_a_checkpoint_without_its_tokenizer_is_refused(tiny_classifier, tmp_path):
    folder = shutil.copytree(tiny_classifier, tmp_path / "model")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(UsageError, match="has no tokenizer .*: copy the tokenizer files"):
        rift.load_classifier(str(folder))


def test_a_run_without_best_yet_is_told_to_resume_or_wait(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    with pytest.raises(UsageError, match=f"no best/ yet .*: resume it with python train.py --resume {tmp_path / 'run'}"):
        evaluate.resolve_checkpoint(str(tmp_path / "run"))


def began_on(run: Path, sha256: str) -> RunFolder:
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"resolved": {"data_files": {"train": {"path": "/a/train.tsv",
                                                                                      "sha256": sha256}}},
                                                 "environment": {"device": "cpu"}}))
    return RunFolder(run, True, 0, 1)


def test_a_resume_on_changed_data_is_refused_naming_the_file(tmp_path):
    run = began_on(tmp_path / "run", "0" * 64)
    now = {"data_files": {"train": {"path": "/b/train.tsv", "sha256": "1" * 64}}}
    with pytest.raises(UsageError, match=r"its train file /b/train.tsv has changed since the run began \(sha256 "
                                         r"000000000000..., now 111111111111...\)"):
        run.check_resumable(now, torch.device("cpu"), 10)
    now["data_files"]["train"]["sha256"] = "0" * 64  # the same bytes elsewhere: on to the next check
    with pytest.raises(UsageError, match="has no last/ to resume from"):
        run.check_resumable(now, torch.device("cpu"), 10)


def test_an_evaluation_resumed_on_changed_data_is_refused_naming_the_file(tmp_path):
    eval_folder.write_json(tmp_path / "results.json", {"resolved": {"data_file": {"path": "/a/test.tsv",
                                                                                "sha256": "0" * 64}}})
    eval_folder.check_same_data(tmp_path, {"path": "/b/test.tsv", "sha256": "0" * 64})  # moved: fine
    with pytest.raises(UsageError, match=r"its data file /b/test.tsv has changed since the evaluation began"):
        eval_folder.check_same_data(tmp_path, {"path": "/b/test.tsv", "sha256": "1" * 64})


def test_what_an_evaluation_kept_is_said_with_the_command_that_finishes_it(tmp_path):
    out = tmp_path / "out"
    assert eval_folder.kept_results(out, 1) == f"nothing was kept in {out}"
    out.mkdir()
    eval_folder.write_json(out / "results.json", {"complete": False})
    (out / "adversarial.rank0.jsonl").write_text("{}\n{}\n")
    (out / "adversarial.rank1.jsonl").write_text("{}\n")
    assert eval_folder.kept_results(out, 2) == (f"{out} keeps 3 attacked examples: finish with torchrun "
                                             f"--nproc-per-node 2 evaluate.py --resume {out}")
    eval_folder.write_json(out / "results.json", {"complete": True})
    assert eval_folder.kept_results(out, 1) == f"the results in {out} are complete"
    assert sorted(p.name for p in out.iterdir()) == ["adversarial.rank0.jsonl", "adversarial.rank1.jsonl",
                                                     "results.json"]  # no .part left


# ---------------------------------------------------------------------------------------------
# The command lines, as a user meets these faults

HOOK = dedent("""
    import os, signal, sys
    sys.path.insert(0, os.getcwd())  # run_cli starts scripts in the repository root
    from safetensors import SafetensorError
    import attacking, attacks, checkpoints, eval_folder, evaluate, train
    from cli import run_command

    # module.function:nth:what -- the nth call of the function sends a signal or fails as a full disk
    target, nth, what = sys.argv.pop(1).split(":")
    module, name = target.split(".")
    owner = {"attacking": attacking, "attacks": attacks, "checkpoints": checkpoints, "eval_folder": eval_folder,
             "evaluate": evaluate, "train": train}[module]
    real, calls = getattr(owner, name), []

    def hooked(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth):
            if what == "full":
                raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                      "message: \\"No space left on device\\" })")
            if what == "ENOSPC":
                raise OSError(28, "No space left on device", "results.json")
            os.kill(os.getpid(), getattr(signal, what))
        return real(*args, **kwargs)

    setattr(owner, name, hooked)
    command = train if sys.argv[1] == "train" else evaluate
    sys.argv.pop(1)
    run_command(lambda: command.main(command.parse_args()))
""")


def said(result) -> list[str]:
    """What a command printed on stderr, its progress bars aside."""
    return [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]


def assert_said_one_line(result, status: int, first: str, *needles: str) -> None:
    lines = said(result)
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(first), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def hooked(tmp_path):
    """Run train or evaluate with one function made to fail or to stop the process at its nth call."""
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    return lambda fault, command, *args: run_cli(fault, command, *args, script=hook, cache=tmp_path / "cache")


def tiny_run_flags(tiny_model, shared_data, out, *extra):
    return ["--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "standard",
            "--max-train-examples", 32, "--batch-size", 8, "--max-steps", 4, "--max-length", 32,
            "--save-every", 2, "--seed", 3, "--out", out, *extra]


@pytest.mark.slow
def test_two_train_runs_started_at_once_on_one_folder_one_runs_and_one_is_refused(tiny_model, shared_data, tmp_path):
    import subprocess
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RIFT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    runs = [subprocess.Popen([sys.executable, "train.py", *map(str, tiny_run_flags(tiny_model, shared_data, out,
                                                                                  "--log-every", 1)),
                              "--lr", lr], cwd=Path(train.__file__).parent, env=env, stderr=subprocess.PIPE, text=True)
            for lr in ("1e-4", "1e-3")]
    ended = [(run.wait(300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in ended) == [0, 1], ended
    [(code, refusal)] = [(code, err) for code, err in ended if code == 1]
    lines = [line for line in refusal.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and (
        "being written by process" in lines[0] or "already exists" in lines[0]), refusal
    winner = [lr for (code, _), lr in zip(ended, (1e-4, 1e-3)) if code == 0][0]
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == winner
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4]  # one run's lines, not two interleaved


@pytest.mark.slow
def test_a_full_disk_at_a_save_is_one_line_keeps_the_last_save_and_the_run_resumes(tiny_model, shared_data, tmp_path,
                                                                                    hooked):
    out = tmp_path / "run"
    result = hooked("checkpoints.save_file:2:full", "train", *tiny_run_flags(tiny_model, shared_data, out))
    assert_said_one_line(result, 1, "error: ", "No space left on device",
                         f"last/ holds step 2: continue with python train.py --resume {out}")
    assert not [p for p in out.iterdir() if p.name.endswith((".saving", ".old"))]
    result = run_cli("--resume", out, cache=tmp_path / "cache")
    assert result.returncode == 0 and json.loads((out / "summary.json").read_text())["steps"] == 4, result.stderr
    assert not [key for key in load_file(out / "last" / "training_state.safetensors") if key.startswith("optimizer.")]
    assert json.loads((out / "last" / "training_state.json").read_text())["step"] == 4  # finished: no moments kept


@pytest.mark.slow
def test_sigterm_while_a_run_starts_is_one_line_and_leaves_no_empty_folder(tiny_model, shared_data, tmp_path, hooked):
    out = tmp_path / "run"
    result = hooked("train.load_data:1:SIGTERM", "train", *tiny_run_flags(tiny_model, shared_data, out))
    assert_said_one_line(result, 143, f"stopped by SIGTERM; no step was saved in {out}: start the run again "
                                      "with a new --out")
    assert not out.exists()


@pytest.mark.slow
def test_a_resume_on_an_edited_data_file_is_refused_naming_it(tiny_model, shared_data, tmp_path):
    rows = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    train_file, dev_file = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train_file.write_text("\n".join(rows[:41]) + "\n")
    dev_file.write_text("\n".join(rows[:1] + rows[41:51]) + "\n")
    out = tmp_path / "run"
    flags = tiny_run_flags(tiny_model, shared_data, out)
    flags[flags.index("--task") + 1] = "custom"
    flags[flags.index("--max-train-examples"):flags.index("--max-train-examples") + 2] = []
    result = run_cli(*flags, "--train-file", train_file, "--dev-file", dev_file, "--text-column", "sentence",
                     "--keep-state", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    (out / "summary.json").unlink()  # as if it had been stopped after its last save
    train_file.write_text(train_file.read_text().replace("\t1\n", "\t0\n", 1))
    assert_one_line_error(run_cli("--resume", out, cache=tmp_path / "cache"),
                          f"its train file {train_file} has changed since the run began")


@pytest.fixture(scope="module")
def tiny_trained(tiny_model, shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli(*tiny_run_flags(tiny_model, shared_data, out), cache=out.parent / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def evaluation_flags(run: Path, shared_data: Path, out: Path) -> list:
    return ["--checkpoint", run, "--attack", "pwws", "--synonyms", "counterfitted", "--num-examples", 6,
            "--examples-at-once", 1, "--data-dir", shared_data, "--out", out]


@pytest.mark.slow
@pytest.mark.parametrize("fault,status,first", [
    ("eval_folder.write_json:2:ENOSPC", 1, "error: No space left on device: results.json; "),  # the final results.json
    ("attacking.summarize:2:SIGINT", 130, "stopped by SIGINT; "),  # Ctrl-C after the second attacked example
])
def test_an_evaluation_stopped_or_out_of_disk_says_what_it_kept_and_resumes_to_the_end(
        tiny_trained, shared_data, tmp_path, hooked, fault, status, first):
    out = tmp_path / "out"
    result = hooked(fault, "evaluate", *evaluation_flags(tiny_trained, shared_data, out))
    assert_said_one_line(result, status, first, f"attacked examples: finish with python evaluate.py --resume {out}")
    result = run_cli("--resume", out, script="evaluate.py", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and len((out / "adversarial.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_an_evaluation_folder_another_process_writes_is_refused(tiny_trained, shared_data, tmp_path):
    lock = hold_folder(tmp_path / "out", new=True)  # this test process is the other writer
    result = run_cli(*evaluation_flags(tiny_trained, shared_data, tmp_path / "out"), script="evaluate.py",
                     cache=tmp_path / "cache")
    assert_one_line_error(result, f"is being written by process {os.getpid()}")
    release_folder(lock, tmp_path / "out", made=True)


def test_a_hub_name_offline_fails_at_once_naming_model_dir(monkeypatch):
    monkeypatch.setattr(rift, "hub_reachable", lambda: False)  # the cache alone is asked, not the hub
    with pytest.raises(UsageError, match="not in the Hugging Face cache and the hub cannot be reached: pass --model DIR"):
        rift.load_classifier("no-such-org/no-such-model", num_labels=2)


def test_hf_hub_offline_means_the_hub_is_not_asked(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rift.hub_reachable.cache_clear()
    assert rift.hub_reachable() is False
    rift.hub_reachable.cache_clear()
