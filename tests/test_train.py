"""train.py end to end, as a user runs it: tiny model, tiny budgets, real SST-2 files."""

import json
import math
import shutil
from pathlib import Path
from textwrap import dedent

import pytest
import torch
from safetensors.torch import load_file

import data
import rift
import train
from conftest import assert_one_line_error, run_cli

TIMING_KEYS = {"examples_per_s", "elapsed_s", "eval_seconds"}
LOSS_TERMS = {"standard": {"loss", "ce"}, "adv": {"loss", "ce", "kl"}, "rift": {"loss", "ce", "kl", "mi_nce", "mi_bound"},
              "freelb": {"loss", "ce"}}
PULLS = {"adv": {"pull_ce", "pull_kl", "cos_ce_kl"},
         "rift": {"pull_ce", "pull_kl", "pull_mi", "cos_ce_kl", "cos_ce_mi", "cos_kl_mi"}}


def tiny_args(tiny_model, shared_data, out, method="rift", *extra):
    return ["--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", method,
            "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4, "--max-length", 32,
            "--adv-steps", 2, "--log-every", 2, "--seed", 3, "--out", out, *extra]


def train_ok(*args, **kwargs) -> Path:
    result = run_cli(*args, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(args[args.index("--out") + 1])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train_lines(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics(run) if "loss" in m]


def evaluation_lines(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics(run) if "loss" not in m]


@pytest.fixture(scope="module")
def sst2_runs(tiny_model, shared_data, tmp_path_factory) -> dict[str, Path]:
    """One tiny run per method on SST-2 (a subset of 64 training examples, 4 steps)."""
    root = tmp_path_factory.mktemp("runs")
    return {method: train_ok(*tiny_args(tiny_model, shared_data, root / method, method, "--keep-state"),
                             cache=root / "cache")  # --keep-state: `unfinished` resumes a copy
            for method in train.TRAIN_METHODS}


# ---------------------------------------------------------------------------------------------
# What a run writes


@pytest.mark.slow
@pytest.mark.parametrize("method", train.TRAIN_METHODS)
def test_each_method_writes_config_metrics_summary_and_best_checkpoint(sst2_runs, method):
    run = sst2_runs[method]
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["seed"] == 3 and config["config"]["method"] == method
    assert config["environment"]["torch"] == torch.__version__ and config["environment"]["transformers"]
    lines = train_lines(run)
    assert [m["step"] for m in lines] == [2, 4]
    for line in lines:
        assert LOSS_TERMS[method] <= set(line)
        assert not ({"kl", "mi_nce", "mi_bound"} - LOSS_TERMS[method]) & set(line)  # no term of another method
        assert all(isinstance(line[k], float) and line[k] == line[k] for k in LOSS_TERMS[method])  # not NaN
    assert any("dev_accuracy" in m for m in metrics(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] == 4 and summary["world_size"] == 1
    assert 0.0 <= summary["best_dev_accuracy"] <= 1.0
    assert (run / "best" / "model.safetensors").stat().st_size > 0


@pytest.mark.slow
def test_rift_metrics_log_the_info_nce_bound_as_log_class_batch_minus_the_loss(sst2_runs):
    for line in train_lines(sst2_runs["rift"]):  # batch 8, two classes: B_y = 4
        assert line["mi_bound"] == pytest.approx(math.log(4) - line["mi_nce"], abs=1e-5)
        assert line["mi_nce"] > 0 and line["kl"] >= 0


@pytest.mark.slow
def test_best_checkpoint_reloads_with_plain_transformers_and_gives_identical_logits(sst2_runs):
    from transformers import AutoModelForSequenceClassification
    best = sst2_runs["rift"] / "best"
    plain = AutoModelForSequenceClassification.from_pretrained(best).eval()
    model, tokenizer = rift.load_classifier(str(best))
    model.eval()
    examples = [data.Example(tuple(s.split()), 0) for s in ("a great film", "dull and slow", "it is fine , i guess")]
    batch = data.tokenize(tokenizer, examples, 32)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        assert torch.equal(plain(**inputs).logits, model(**inputs).logits)
    assert plain.config.id2label == {0: "0", 1: "1"} and plain.config.num_labels == 2


def test_a_checkpoint_saved_in_bf16_loads_with_fp32_weights(tiny_model, tmp_path):
    """bf16 comes from autocast only: AdamW on bf16 weights would round small updates away."""
    from transformers import AutoTokenizer, BertModel
    BertModel.from_pretrained(tiny_model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "bf16")
    model, _ = rift.load_classifier(str(tmp_path / "bf16"), num_labels=2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.slow
def test_same_seed_twice_gives_identical_losses_and_weights(sst2_runs, tiny_model, shared_data, tmp_path):
    again = train_ok(*tiny_args(tiny_model, shared_data, tmp_path / "again", "rift"), cache=tmp_path / "cache")
    first = sst2_runs["rift"]
    assert train_lines(again) == train_lines(first)
    a, b = load_file(first / "best" / "model.safetensors"), load_file(again / "best" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_training(run: Path, whole: Path) -> None:
    """The same losses at every logged step and the same weights, critics and optimiser at the end."""
    assert [{k: v for k, v in m.items() if k not in PULLS["rift"]} for m in train_lines(run)] == train_lines(whole)
    for file in ("last/model.safetensors", "last/training_state.safetensors"):
        a, b = load_file(run / file), load_file(whole / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adv", "rift"])
def test_log_pulls_logs_each_terms_pull_at_every_logged_step_and_trains_bit_for_bit_the_same(
        sst2_runs, tiny_model, shared_data, tmp_path, method):
    run = train_ok(*tiny_args(tiny_model, shared_data, tmp_path / "pulls", method, "--log-pulls", "--keep-state"),
                   cache=tmp_path / "cache")  # the optimiser compared too
    lines = train_lines(run)
    assert len(lines) == 2 and all(PULLS[method] <= set(line) for line in lines)
    assert all(line["pull_ce"] > 0 and -1 <= line["cos_ce_kl"] <= 1 for line in lines)
    assert_same_training(run, sst2_runs[method])


@pytest.mark.slow
def test_custom_task_from_generated_tsv_trains_and_labels_the_checkpoint(tiny_model, tmp_path):
    words = ["good", "fine", "great", "bad", "dull", "awful"]
    rows = [f"{words[i % 6]} movie number {i}\t{'pos' if i % 6 < 3 else 'neg'}" for i in range(48)]
    (tmp_path / "train.tsv").write_text("sentence\tpolarity\n" + "\n".join(rows) + "\n")
    (tmp_path / "dev.tsv").write_text("sentence\tpolarity\n" + "\n".join(rows[:12]) + "\n")
    run = train_ok("--model", tiny_model, "--task", "custom", "--train-file", tmp_path / "train.tsv",
                   "--dev-file", tmp_path / "dev.tsv", "--text-column", "sentence", "--label-column", "polarity",
                   "--method", "adv", "--batch-size", 8, "--max-steps", 3, "--adv-steps", 1, "--out", tmp_path / "run",
                   cache=tmp_path / "cache")
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert json.loads((run / "summary.json").read_text())["task"] == "custom"


# ---------------------------------------------------------------------------------------------
# Resuming: a run stopped or killed at any moment ends as if it had never stopped

# train.py, with a signal sent to itself at the n-th call of one function: a kill at a chosen
# moment. Its first argument names them, function:match:n:SIGNAL[:rank], where only calls whose
# first argument ends in `match` count, and only the process of that rank signals itself.
KILL_HOOK = dedent("""
    import os, pathlib, signal, sys
    sys.path.insert(0, os.getcwd())  # run_cli starts scripts in the repository root
    import checkpoints, train
    from cli import run_command

    function, match, nth, signame, *rank = sys.argv.pop(1).split(":")
    owner = {"rename": pathlib.Path, "save_file": checkpoints}.get(function, train)
    real, calls = getattr(owner, function), []

    def hooked(*args, **kwargs):
        if str(args[0]).endswith(match) and rank in ([], [os.environ.get("RANK", "0")]):
            calls.append(args)
            if len(calls) == int(nth):
                os.kill(os.getpid(), getattr(signal, signame))
        return real(*args, **kwargs)

    setattr(owner, function, hooked)
    run_command(lambda: train.main(train.parse_args()))
""")


def state(run: Path, folder: str = "last") -> dict:
    return json.loads((run / folder / "training_state.json").read_text())


def assert_same_run(run: Path, whole: Path) -> None:
    """Bit for bit the same: metrics lines (but their timings), weights, critics, optimiser, random states."""
    assert train_lines(run) == train_lines(whole)
    assert evaluation_lines(run) == evaluation_lines(whole)
    for file in ("last/model.safetensors", "last/training_state.safetensors", "best/model.safetensors"):
        a, b = load_file(run / file), load_file(whole / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    untimed = lambda progress: {k: v for k, v in progress.items() if k not in ("train_seconds", "metrics_bytes")}
    assert untimed(state(run)) == untimed(state(whole))
    summary = lambda r: {k: v for k, v in json.loads((r / "summary.json").read_text()).items()
                         if k not in ("run", "train_examples_per_s", "train_minutes")}
    assert summary(run) == summary(whole)


@pytest.mark.slow
def test_a_run_stopped_then_killed_at_any_moment_resumes_to_the_very_same_run(tiny_model, shared_data, tmp_path):
    """Ctrl-C, then SIGKILL in the middle of a step, between the two renames of a save and in the
    middle of a save; each time --resume continues from last/, and the run ends as one never stopped."""
    args = [*tiny_args(tiny_model, shared_data, tmp_path / "whole", "rift")]
    args[args.index("--max-steps") + 1] = 12
    args[args.index("--log-every") + 1] = 3  # windows that straddle saves
    args += ["--save-every", 4, "--eval-every", 5]
    whole = train_ok(*args, cache=tmp_path / "cache")
    hook, run = tmp_path / "kill_hook.py", tmp_path / "stopped"
    hook.write_text(KILL_HOOK)
    args[args.index("--out") + 1] = run

    def leg(kill: str, *leg_args, code: int) -> None:
        result = run_cli(kill, *leg_args, script=hook, cache=tmp_path / "cache")
        assert result.returncode == code and "Traceback" not in result.stderr, result.stderr[-3000:]

    leg("loss_terms::3:SIGINT", *args, code=130)  # Ctrl-C during step 3: it finishes, saves and exits
    assert state(run)["step"] == 3
    leg("loss_terms::4:SIGKILL", "--resume", run, code=-9)  # killed in step 7: last/ holds step 4 ...
    assert state(run)["step"] == 4 and [m["step"] for m in metrics(run)][-2:] == [5, 6]  # ... metrics step 6
    leg("rename:last.saving:1:SIGKILL", "--resume", run, code=-9)  # killed in step 8's save, between renames
    assert not (run / "last").exists() and state(run, "last.old")["step"] == 4
    leg("save_file::1:SIGKILL", "--resume", run, code=-9)  # killed while step 8's save is half written
    assert state(run)["step"] == 4 and (run / "last.saving").exists()
    result = run_cli("--resume", run, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run, whole)
    assert [leg["step"] for leg in json.loads((run / "config.json").read_text())["resumed"]] == [3, 4, 4, 4]
    assert not [p.name for p in run.iterdir() if p.name.endswith((".old", ".saving", ".part"))]


@pytest.mark.slow
def test_freelb_stopped_mid_run_resumes_to_the_very_same_run(tiny_model, shared_data, tmp_path):
    """FreeLB restarts the random state at each of its K steps (one dropout mask): a resumed run
    still draws what the whole run drew."""
    args = [*tiny_args(tiny_model, shared_data, tmp_path / "whole", "freelb"), "--save-every", 2, "--eval-every", 3]
    whole = train_ok(*args, cache=tmp_path / "cache")
    hook, run = tmp_path / "kill_hook.py", tmp_path / "stopped"
    hook.write_text(KILL_HOOK)
    args[args.index("--out") + 1] = run
    result = run_cli("tokenize::3:SIGINT", *args, script=hook, cache=tmp_path / "cache")  # Ctrl-C in step 3
    assert result.returncode == 130 and state(run)["step"] == 3, result.stderr[-3000:]
    assert run_cli("--resume", run, cache=tmp_path / "cache").returncode == 0
    assert_same_run(run, whole)


@pytest.mark.slow
def test_a_non_finite_loss_stops_at_once_naming_the_step_and_the_term_and_keeps_the_checkpoints(
        tiny_model, shared_data, tmp_path):
    args = tiny_args(tiny_model, shared_data, tmp_path / "run", "standard", "--lr", "1e30", "--warmup", "0",
                     "--save-every", 1, "--eval-every", 1)  # step 1 throws the weights to 1e30; step 2 overflows
    result = run_cli(*args, cache=tmp_path / "cache")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith("error: step 2: the ce term is nan; training stopped before")
    run = tmp_path / "run"
    assert state(run)["step"] == 1 and not (run / "summary.json").exists()
    assert [m["step"] for m in metrics(run)] == [1] * len(metrics(run))  # nothing of step 2 was logged
    for file in ("last/model.safetensors", "best/model.safetensors", "last/training_state.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(run / file).values()), file


@pytest.fixture
def unfinished(sst2_runs, tmp_path) -> Path:
    """A copy of the tiny rift run as if it had been killed after its last save."""
    run = tmp_path / "unfinished"
    shutil.copytree(sst2_runs["rift"], run)
    (run / "summary.json").unlink()
    return run


@pytest.mark.slow
@pytest.mark.parametrize("flags,needle", [
    (["--lr", "1e-3"], "--lr 0.001 differs from the run's 2e-05"),  # a setting that changes the arithmetic
    (["--seed", "3", "--max-steps", "5"], "--max-steps 5 differs from the run's 4"),  # the same seed may be given
    (["--out", "elsewhere"], "drop --out"),
])
def test_resume_refuses_flags_that_would_change_the_run(unfinished, flags, needle):
    with pytest.raises(data.UsageError, match=needle):
        train.parse_args(["--resume", str(unfinished), *flags])


@pytest.mark.slow
def test_resume_takes_the_runs_settings_and_the_bookkeeping_flags_given(unfinished, tmp_path):
    cfg = train.parse_args(["--resume", str(unfinished), "--log-every", "5", "--data-dir", str(tmp_path)])
    saved = json.loads((unfinished / "config.json").read_text())["config"]
    assert vars(cfg) == saved | {"log_every": 5, "data_dir": str(tmp_path), "resume": str(unfinished)}


@pytest.mark.slow
@pytest.mark.parametrize("case,needle", [
    ("other data", "train_examples was 65, here it is 64"),
    ("no last/", "has no last/ to resume from"),
    ("a finished run", "has finished"),
    ("a broken last/", "is not a whole training state"),
    ("not a run", "no train.py run there"),
])
def test_resume_refuses_a_run_it_cannot_continue_exactly_and_changes_nothing(unfinished, tmp_path, case, needle):
    run = unfinished
    if case == "other data":
        config = json.loads((run / "config.json").read_text())
        config["resolved"]["train_examples"] = 65
        (run / "config.json").write_text(json.dumps(config))
    elif case == "no last/":
        shutil.rmtree(run / "last")
    elif case == "a finished run":
        (run / "summary.json").write_text("{}")
    elif case == "a broken last/":
        (run / "last" / "training_state.safetensors").write_bytes(b"not safetensors")
    elif case == "not a run":
        run = tmp_path / "nothing"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = run_cli("--resume", run, cache=tmp_path / "cache")
    assert_one_line_error(result, needle)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written, nothing lost


# ---------------------------------------------------------------------------------------------
# Bad inputs: non-zero exit, one line `error: ...`, no traceback


@pytest.mark.slow
def test_unknown_task_is_an_argparse_error(tmp_path):
    result = run_cli("--task", "nosuchtask", "--out", tmp_path / "run", cache=tmp_path / "cache")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: argument --task: invalid choice: 'nosuchtask'" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_custom_task_without_train_file_is_a_usage_error(tiny_model, tmp_path):
    (tmp_path / "dev.tsv").write_text("text\tlabel\na\t0\n")
    result = run_cli("--model", tiny_model, "--task", "custom", "--dev-file", tmp_path / "dev.tsv",
                     "--out", tmp_path / "run", cache=tmp_path / "cache")
    assert_one_line_error(result, "--train-file")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_missing_model_folder_is_a_usage_error(shared_data, tmp_path):
    result = run_cli(*tiny_args(tmp_path / "no-such-model", shared_data, tmp_path / "run"), cache=tmp_path / "cache")
    assert_one_line_error(result, "no-such-model")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_usage_error(tiny_model, shared_data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file" * 10)
    result = run_cli(*tiny_args(broken, shared_data, tmp_path / "run"), cache=tmp_path / "cache")
    assert_one_line_error(result, "broken")


@pytest.mark.slow
def test_batch_size_not_a_multiple_of_classes_fails_before_creating_the_run_folder(tiny_model, shared_data, tmp_path):
    args = tiny_args(tiny_model, shared_data, tmp_path / "run", "standard")
    args[args.index("--batch-size") + 1] = 7
    result = run_cli(*args, cache=tmp_path / "cache")
    assert_one_line_error(result, "multiple")
    # A failed start must not leave a half-made run folder that blocks a rerun with the same --out.
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_existing_non_empty_out_folder_is_refused_and_left_untouched(tiny_model, shared_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("my earlier results")
    result = run_cli(*tiny_args(tiny_model, shared_data, out, "standard"), cache=tmp_path / "cache")
    assert_one_line_error(result, str(out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my earlier results"


# ---------------------------------------------------------------------------------------------
# Distributed


@pytest.fixture(scope="module")
def ddp_run(tiny_model, shared_data, torchrun, tmp_path_factory) -> Path:
    """The tiny rift run (4 steps) on two CPU processes."""
    root = tmp_path_factory.mktemp("ddp")
    return train_ok(*tiny_args(tiny_model, shared_data, root / "run", "rift"), cache=root / "cache", launcher=torchrun)


@pytest.mark.slow
def test_two_process_torchrun_rift_run_on_cpu_keeps_replicas_in_sync(ddp_run):
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["replicas_in_sync"] is True
    assert json.loads((ddp_run / "config.json").read_text())["environment"]["world_size"] == 2
    assert LOSS_TERMS["rift"] <= set(train_lines(ddp_run)[-1])


@pytest.mark.slow
def test_two_process_run_logs_the_pulls_of_its_own_batch_and_trains_bit_for_bit_the_same(ddp_run, tiny_model,
                                                                                        shared_data, torchrun, tmp_path):
    """Under DDP the pulls' autograd.grad passes run none of the reducer's hooks: the replicas stay in
    sync and the run's weights are those of the run without --log-pulls."""
    run = train_ok(*tiny_args(tiny_model, shared_data, tmp_path / "run", "rift", "--log-pulls"), cache=tmp_path / "cache",
                   launcher=torchrun)
    assert json.loads((run / "summary.json").read_text())["replicas_in_sync"] is True
    assert all(PULLS["rift"] <= set(line) for line in train_lines(run))
    assert_same_training(run, ddp_run)


@pytest.mark.slow
def test_two_process_run_stopped_on_one_process_resumes_to_the_very_same_run(ddp_run, tiny_model, shared_data,
                                                                              torchrun, tmp_path):
    """Ctrl-C reaches rank 0 only: both processes stop after the same step, rank 0 saves every
    process's random states (each draws its own dropout), and each loads its own on --resume."""
    (tmp_path / "kill_hook.py").write_text(KILL_HOOK)
    run = tmp_path / "stopped"
    result = run_cli("loss_terms::3:SIGINT:0", *tiny_args(tiny_model, shared_data, run, "rift"),
                     script=tmp_path / "kill_hook.py", cache=tmp_path / "cache", launcher=torchrun)
    assert result.returncode != 0 and "stopped at step 3 of 4" in result.stderr, result.stderr[-3000:]
    assert state(run)["step"] == 3 and len(state(run)["random_states"]) == 2
    result = run_cli("--resume", run, cache=tmp_path / "cache", launcher=torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run, ddp_run)


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "0"), ("--grad-accum", "0"),
                                        ("--warmup", "1.5"), ("--adv-eps", "-0.1"), ("--log-every", "0")])
def test_out_of_range_settings_are_refused_by_argparse(flag, value, capsys):
    with pytest.raises(SystemExit) as exit:
        train.parse_args([flag, value])
    assert exit.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err.splitlines()[-1]


def test_log_pulls_with_compile_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit:
        train.parse_args(["--log-pulls", "--compile"])
    assert exit.value.code == 2 and "--log-pulls" in capsys.readouterr().err.splitlines()[-1]
    assert train.parse_args(["--log-pulls"]).log_pulls and not train.parse_args([]).log_pulls


def test_every_float_setting_refuses_nan_and_infinities_and_a_learning_rate_must_be_positive(capsys):
    """In-process: argparse exits (status 2) with its one-line `error: argument ...` message."""
    float_flags = ["--" + key.replace("_", "-") for key, value in vars(train.parse_args([])).items()
                   if isinstance(value, float)]
    assert {"--lr", "--critic-lr", "--alpha", "--beta", "--tau", "--adv-eps", "--warmup"} <= set(float_flags)
    bad = [(flag, value) for flag in float_flags for value in ("nan", "inf", "-inf")]
    bad += [("--lr", "0"), ("--lr", "-1e-5"), ("--critic-lr", "0")]
    for flag, value in bad:
        with pytest.raises(SystemExit) as exit:
            train.parse_args([flag, value])
        assert exit.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err.splitlines()[-1], (flag, value)
    assert train.parse_args(["--lr", "1e-5"]).lr == 1e-5


def test_each_default_has_one_home_and_the_values_it_had():
    """The command lines take their defaults from the constants beside the code they belong to, and
    the adversaries' own defaults are the same ones."""
    import adversaries
    import attacks
    import evaluate
    import synonyms
    t, e = train.parse_args([]), evaluate.parse_args([])
    assert (t.alpha, t.beta, t.tau, t.lr, t.critic_lr, t.weight_decay, t.warmup, t.batch_size) == (
        rift.ALPHA, rift.BETA, rift.TAU, rift.LR, rift.CRITIC_LR, rift.WEIGHT_DECAY, rift.WARMUP, rift.BATCH_SIZE) == (
        0.1, 10.0, 0.2, 2e-5, 1e-3, 0.01, 0.1, 32)
    assert adversaries.PGD() == adversaries.PGD(t.adv_eps, t.adv_steps, t.adv_norm) == adversaries.PGD(0.1, 3, "l2")
    assert adversaries.ASCC(None) == adversaries.ASCC(None, t.ascc_steps, t.ascc_lr, t.ascc_entropy) == \
        adversaries.ASCC(None, 10, 1.0, 15 / (300 * 128))
    assert (e.ascc_steps, e.pgd_steps, e.pgd_norm, e.min_words, e.population, e.generations, e.neighbours, e.min_cos) == (
        adversaries.ASCC_STEPS, adversaries.PGD_ATTACK_STEPS, adversaries.PGD_NORM, attacks.MIN_WORDS,
        attacks.POPULATION, attacks.GENERATIONS, synonyms.VECTOR_NEIGHBOURS, synonyms.VECTOR_MIN_COS) == (
        10, 10, "l2", 4, 60, 40, 50, 0.5)


def test_train_and_evaluate_read_the_same_data_flags(capsys):
    """cli.add_data_flags writes them once for both command lines; their ranges are argparse's."""
    import evaluate
    flags = ["--data-dir", "D", "--text-column", "t", "--label-column", "l", "--context-column", "c",
             "--labels", "a,b", "--max-length", "7"]
    for parse in (train.parse_args, evaluate.parse_args):
        cfg = parse(flags)
        assert (cfg.data_dir, cfg.text_column, cfg.label_column, cfg.context_column, cfg.labels, cfg.max_length) == (
            "D", "t", "l", "c", "a,b", 7)
        defaults = parse([])
        assert (defaults.text_column, defaults.label_column, defaults.max_length) == (None, None, None)  # not given: a run's own columns, else data.TEXT_COLUMN, LABEL_COLUMN
        with pytest.raises(SystemExit) as exit:
            parse(["--max-length", "0"])
        assert exit.value.code == 2 and "argument --max-length" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.slow
def test_a_nan_learning_rate_is_a_one_line_argparse_error_before_anything_runs(tmp_path):
    result = run_cli("--lr", "nan", "--out", tmp_path / "run", cache=tmp_path / "cache")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --lr: must be a finite number above 0, not nan" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_custom_task_with_a_single_label_is_a_usage_error(tiny_model, tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(f"movie {i}\tpos\n" for i in range(16)))
    result = run_cli("--model", tiny_model, "--task", "custom", "--train-file", tmp_path / "train.tsv",
                     "--dev-file", tmp_path / "train.tsv", "--out", tmp_path / "run", cache=tmp_path / "cache")
    assert_one_line_error(result, "two or more distinct labels")
    assert not (tmp_path / "run").exists()
