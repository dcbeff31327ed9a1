"""The GPU's check step (experiments/gpu.py runs it): on a quiet GPU the training step of each
method and the attacks many examples at once against one at a time, in-process; then, side by side,
the command lines on CUDA (every method through train.py, eager and compiled, a stop and --resume, a
one-process torchrun, evaluate.py, the CUDA tests); and the page that files what it measured.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import ATTACKS, REPO, trained, training_curve, write_page

import torch
from safetensors.torch import load_file

import attacking
import attacks
import synonyms
from adversaries import ASCC, ASCC_STEPS, PGD_EPS, PGD_STEPS, neighbour_table
from cli import SEED, format_table, pick_device
from costs import training_cost
from data import TASKS, load_split
from rift import load_classifier

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
    lines = training_curve(run)
    config = json.loads((run / "config.json").read_text())["config"] if (run / "config.json").is_file() else None
    lines = [line for line in lines if line["step"] > skip]
    if config is None or len(lines) < 2:
        return None
    examples = (lines[-1]["step"] - lines[0]["step"]) * config["batch_size"] * config["grad_accum"]
    return examples / (lines[-1]["elapsed_s"] - lines[0]["elapsed_s"])


def attack_speed(run: Path, data_dir: str | None, n: int, table) -> list[dict]:
    """PWWS/counter-fitted and ASCC on the same n SST-2 test sentences (evaluate.py's draw, seed
    SEED), many examples at once and one at a time, in-process: examples/s, model calls/s, the share
    of wall time in the model, and how many outcomes differ from one at a time."""
    device = pick_device("auto")
    model, tokenizer = load_classifier(str(run / "best"))
    model.to(device).eval()
    test = load_split(TASKS["sst2"], "test", data_dir)
    examples = [test[i] for i in attacks.sample_examples(test, n, SEED)]
    max_length, amp = TASKS["sst2"].max_length, device.type == "cuda"
    neighbours = neighbour_table(tokenizer, table).to(device)
    rows, outcomes = [], {}
    for search in ("pwws", "ascc"):
        for at_once in (32, 1):
            started = time.perf_counter()
            # PWWS's examples at once share the victim's batches; ASCC's go through the model together
            attack = attacking.WordAttack("pwws", table, at_once=at_once) if search == "pwws" else ASCC(neighbours)
            with attacking.Victim(model, tokenizer, max_length, 32 if search == "pwws" else at_once, amp) as victim:
                done = dict(attack.attack(victim, examples, [[0, k] for k in range(len(examples))]))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall = time.perf_counter() - started
                model_seconds = victim.model_seconds
            results = [done[k] for k in range(len(examples))]
            outcomes[search, at_once] = [r.status for r in results]
            summary = attacking.summarize([r.record() for r in results])
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
    for adversary, steps in (("pgd", PGD_STEPS), ("ascc", ASCC_STEPS)):
        for batch_size in settings["batch_sizes"]:
            started = time.perf_counter()
            rows = training_cost(model, train, device, batch_size, steps, PGD_EPS, TASKS["sst2"].max_length,
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
        for attack in ("pwws_counterfitted", "ascc"):
            jobs[f"evaluate-{attack}"] = lambda attack=attack: evaluate_cli(
                root, attack, ATTACKS[attack][0], settings["attack_examples"], data, env)
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
        while process.poll() is None and len(training_curve(out)) < max(steps // 2, 1):
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

def write_check_page(report: dict, path: Path) -> None:
    env = report["environment"]
    speed = [row | {"examples_per_s": round(row["examples_per_s"], 1), "peak_memory_mb": round(row["peak_memory_mb"])}
             for row in report.get("training_speed", [])]
    attacks = [{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
               for row in report.get("attack_speed", [])]
    checks = [{"check": name, "ok": c.get("ok"), "seconds": c.get("seconds"),
               "examples_per_s": round(c["steady_examples_per_s"], 1) if c.get("steady_examples_per_s") else None,
               "note": note(c)} for name, c in report.get("checks", {}).items()]
    text = (f"# rift on a GPU: the CUDA paths and their speed\n\nProduced by `python3 experiments/gpu.py run check ... "
            f"--bundle gpu --out OUT` on {env.get('gpu')} (torch {env.get('torch')}, transformers {env.get('transformers')}), "
            f"{report['started']}, {report['seconds']:.0f} s in all; filed with `python experiments/gpu.py file OUT`. "
            f"The model: {report['model']}. Settings: `{json.dumps(report.get('settings'))}`.\n\n"
            "## Training steps per second, in-process (bench.py's cost measurement), bf16 autocast\n\n"
            f"SST-2 sentences at max length 64, each method timed in turns on the same 4 batches; PGD K={PGD_STEPS}, "
            f"ASCC K={ASCC_STEPS}; "
            "peak MB: CUDA's allocator peak after the method's warm-up pass.\n\n```\n"
            + format_table(speed, {"adversary": "adversary", "batch_size": "batch", "method": "method",
                                   "examples_per_s": "examples/s", "ratio_to_standard": "x standard",
                                   "measured_over_expected": "measured/expected", "peak_memory_mb": "peak MB"})
            + "\n```\n\n## Attacks, many examples at once against one at a time\n\n"
              f"PWWS with the counter-fitted table and ASCC on the same {report['settings']['attack_examples']} SST-2 "
              f"test sentences (evaluate.py's draw, seed {SEED}), in-process, bf16 search with the fp32 re-check, on a "
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
