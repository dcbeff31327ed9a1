"""Does RIFT's own term get to work? Two studies that give it the chance (bench.py is their
command line):

    python bench.py critics   # the InfoNCE critics alone on S = T, by learning rate -> results/critic-lr.*
    python bench.py pilot     # adv against rift with critics that learn and the model's own feature,
                              # one robust selection rule for all, paired on the same test sentences
                              #                                                   -> results/sst2-pilot.*

Why. The frontier (results/sst2-frontier.md) trained the critics at the encoder's learning rate for
150 steps, where they barely learn: until they do, the MI term pushes S to fit two random maps. It
took S and T at [CLS], which all-MiniLM-L6-v2 never trained as a sentence feature. And it kept the
checkpoint with the best clean dev accuracy, which picks models before the adversary has acted. The
pilot changes these three things and nothing else.

The pilot resumes like every runner: what has finished is not repeated, a run cut short goes on
from its last save, and the tables are rewritten after every step, so it can span sessions.
"""

import json
import math
import random
import statistics
from datetime import date
from pathlib import Path

import torch

from cli import format_table, pyplot
from data import TASKS, UsageError, balanced_batches, load_split, read_text, tokenize
from experiments import binomial_se, example_outcomes, run_cli, teacher_cka, tiny_model
from rift import (DEFAULT_MODEL, Critics, conditional_info_nce, load_classifier, make_teacher, teacher_features,
                  warmup_linear_decay)

# ---------------------------------------------------------------------------------------------
# The critics alone: how fast can they learn the ideal S = T?
#
# With S = T exactly the true I(S; T | Y) is as large as it gets, so the InfoNCE bound is limited
# only by log B_y and by how far the critics have learned. Everything else as in train.py: the
# same 4,800 training sentences as the frontier, class-balanced batches of 16 + 16, tau 0.2,
# AdamW with weight decay 0.01, 10% warm-up then linear decay, 150 steps.

CRITICS = dict(task="sst2", train_examples=4800, steps=150, batch_size=32, tau=0.2, weight_decay=0.01, warmup=0.1,
               seed=42, lrs=(2e-5, 5e-5, 1e-4, 3e-4, 1e-3, 3e-3), features=("mean", "cls"), checkpoints=(10, 25, 50))
CRITICS_SMOKE = dict(CRITICS, train_examples=64, steps=12, batch_size=8, lrs=(1e-3,), features=("cls",),
                     checkpoints=(5,))


@torch.no_grad()
def pretrained_features(model_name: str, examples, feature: str, max_length: int) -> torch.Tensor:
    """The frozen pre-trained model's `feature` (N, H) of each example, the T that RIFT's critics see."""
    model, tokenizer = load_classifier(model_name, num_labels=2)
    teacher = make_teacher(model)
    chunks = [teacher_features(teacher, tokenize(tokenizer, examples[i:i + 64], max_length), feature)
              for i in range(0, len(examples), 64)]
    return torch.cat(chunks).float()


def critic_trajectory(features: torch.Tensor, labels: list[int], lr: float, settings: dict) -> list[float]:
    """The InfoNCE bound (nats) at every step of critics trained alone on S = T = features."""
    s = settings
    torch.manual_seed(s["seed"])
    critics = Critics(2, features.shape[1], features.shape[1])
    optimizer = torch.optim.AdamW(critics.parameters(), lr=lr, weight_decay=s["weight_decay"])
    scheduler = warmup_linear_decay(optimizer, s["steps"], int(s["warmup"] * s["steps"]))
    batches = balanced_batches(labels, 2, s["batch_size"], s["seed"])
    targets = torch.tensor(labels)
    bounds = []
    for _ in range(s["steps"]):
        index = torch.tensor(next(batches))
        loss, bound = conditional_info_nce(critics, features[index], features[index], targets[index], s["tau"])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bounds.append(bound.item())
    return bounds


def critics_study(model: str, data_dir: str | None, folder: Path, smoke: bool) -> list[dict]:
    """results/critic-lr.{md,json,png}: the bound over the steps for every learning rate and feature."""
    s = CRITICS_SMOKE if smoke else CRITICS
    task = TASKS[s["task"]]
    if smoke:
        model = tiny_model(folder / "tiny-model") if not (folder / "tiny-model").is_dir() else str(folder / "tiny-model")
    train = random.Random(s["seed"]).sample(load_split(task, "train", data_dir), s["train_examples"])
    labels = [ex.label for ex in train]
    ceiling = math.log(s["batch_size"] // 2)
    rows, curves = [], {}
    for feature in s["features"]:
        features = pretrained_features(model, train, feature, task.max_length)
        for lr in s["lrs"]:
            bounds = critic_trajectory(features, labels, lr, s)
            curves[f"{feature} lr {lr:g}"] = bounds
            rows.append({"feature": feature, "lr": lr,
                         **{f"step_{c}": statistics.fmean(bounds[max(c - 5, 0):c]) for c in s["checkpoints"]},
                         "last_10": statistics.fmean(bounds[-10:]), "max": max(bounds),
                         "last_10_share": statistics.fmean(bounds[-10:]) / ceiling})
            print(f"{feature} lr {lr:g}: bound over the last 10 steps {rows[-1]['last_10']:.3f} of {ceiling:.3f}")
    columns = {"feature": "feature", "lr": "critic lr", **{f"step_{c}": f"bound at step {c}" for c in s["checkpoints"]},
               "last_10": "last 10 steps", "last_10_share": "of log B_y", "max": "max"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "critic-lr.json").write_text(json.dumps({"settings": s, "model": model, "log_B_y": ceiling,
                                                       "rows": rows, "bounds": curves}, indent=2))
    (folder / "critic-lr.md").write_text(
        f"# The InfoNCE critics alone, on S = T: how fast do they learn?\n\n"
        f"Produced by `python bench.py critics` ({date.today().isoformat()}). T = the frozen pre-trained "
        f"{DEFAULT_MODEL if model == DEFAULT_MODEL else model}'s feature (mean of the token states, or h_[CLS]) "
        f"of {s['train_examples']} SST-2 training sentences (seed {s['seed']}, the frontier's); S = T exactly, so "
        f"only the critics limit the bound. rift.Critics and rift.conditional_info_nce as train.py uses them: "
        f"class-balanced batches of {s['batch_size'] // 2} + {s['batch_size'] // 2}, tau {s['tau']}, AdamW "
        f"(weight decay {s['weight_decay']}), {s['warmup']:.0%} warm-up then linear decay, {s['steps']} steps. "
        f"\"bound at step c\": the mean of the 5 steps up to c; the ceiling is log B_y = log "
        f"{s['batch_size'] // 2} = {ceiling:.3f} nats.\n\n```\n{format_table(rows, columns)}\n```\n\n"
        f"train.py's `--critic-lr` default is chosen from this table (train.CRITIC_LR); `--preset paper-*` "
        f"keeps the release's choice, the encoder's 2e-5.\n")
    plot_critics(curves, ceiling, folder / "critic-lr.png")
    print(format_table(rows, columns))
    return rows


def plot_critics(curves: dict, ceiling: float, path: Path) -> None:
    try:
        plt = pyplot()
    except UsageError as err:
        print(f"no figure: {err}")
        return
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for name, bounds in curves.items():
        ax.plot(range(1, len(bounds) + 1), bounds, label=name, linestyle="-" if name.startswith("mean") else "--")
    ax.axhline(ceiling, color="grey", linewidth=0.8)
    ax.set(xlabel="step", ylabel="InfoNCE bound on I(S;T|Y), nats", title="critics alone on S = T")
    ax.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# The pilot: adv against rift at the frontier's budget, with RIFT's term given the chance to work
#
# Every run: the frontier's 4,800 SST-2 sentences, 150 steps of 32, lr 5e-5, beta 10 (the paper's),
# ASCC as the training adversary, the checkpoint chosen on ASCC robust accuracy on 300 dev
# sentences at steps 50, 100 and 150 (the same rule for all). rift with both fixes (the critics'
# own learning rate and the model's own feature, here the mean pool), rift with the critics'
# learning rate alone (features at [CLS], as the frontier), and adv, each with seeds 42 and 43;
# then both fixes at alpha 0.3 and 1.0. Attacked on the same 500 test sentences with PWWS
# (WordNet and the counter-fitted table) and ASCC.

PILOT = dict(task="sst2", train_examples=4800, steps=150, batch_size=32, lr=5e-5, beta=10.0, eval_every=50,
             save_every=25, dev_examples=872, extra_train=[], extra_eval=[], test_examples=500)
PILOT_SMOKE = dict(PILOT, train_examples=64, steps=2, batch_size=8, eval_every=1, dev_examples=16,
                   extra_train=["--max-length", "32", "--select-examples", "8"], extra_eval=[], test_examples=4)
PILOT_RUNS = [  # name, method, seed, its own train.py flags; cheapest answer first
    ("adv", "adv", 42, []),
    ("rift", "rift", 42, ["--alpha", "0.1"]),
    ("rift-cls", "rift", 42, ["--alpha", "0.1", "--feature", "cls"]),
    ("adv-seed43", "adv", 43, []),
    ("rift-seed43", "rift", 43, ["--alpha", "0.1"]),
    ("rift-cls-seed43", "rift", 43, ["--alpha", "0.1", "--feature", "cls"]),
    ("rift-alpha0.3", "rift", 42, ["--alpha", "0.3"]),
    ("rift-alpha1", "rift", 42, ["--alpha", "1.0"]),
]
PILOT_SMOKE_RUNS = PILOT_RUNS[:3]
PILOT_EVALS = {"pwws": ["--attack", "pwws"], "pwws_counterfitted": ["--attack", "pwws", "--synonyms", "counterfitted"],
               "ascc": ["--attack", "ascc"]}
PILOT_COLUMNS = {"pwws": "pwws/wordnet", "pwws_counterfitted": "pwws/counterfitted", "ascc": "ascc"}
CKA_FEATURES = ("mean", "cls")


def pilot(model: str, data_dir: str | None, root: Path, folder: Path, smoke: bool, table_only: bool) -> None:
    s, runs = (PILOT_SMOKE, PILOT_SMOKE_RUNS) if smoke else (PILOT, PILOT_RUNS)
    if not table_only:
        if smoke:
            model = str(root / "tiny-model")
            if not (root / "tiny-model" / "config.json").is_file():
                tiny_model(root / "tiny-model")
        data = ["--data-dir", data_dir] if data_dir else []
        for name, method, seed, flags in runs:
            run = root / name
            run_cli(["train.py", "--task", s["task"], "--model", model, "--method", method, "--adversary", "ascc",
                     "--beta", str(s["beta"]), *flags, "--select-on", "robust",
                     "--max-train-examples", str(s["train_examples"]), "--max-steps", str(s["steps"]),
                     "--batch-size", str(s["batch_size"]), "--lr", str(s["lr"]), "--eval-every", str(s["eval_every"]),
                     "--seed", str(seed), "--save-every", str(s["save_every"]), "--out", str(run),
                     *s["extra_train"], *data], run)
            for feature in CKA_FEATURES:
                teacher_cka(run, s["dev_examples"], data_dir, feature)
            for evaluation, flags in PILOT_EVALS.items():
                run_cli(["evaluate.py", "--checkpoint", str(run), *flags, "--num-examples", str(s["test_examples"]),
                         "--seed", "42", "--out", str(run / "eval" / evaluation), *s["extra_eval"], *data],
                        run / "eval" / evaluation)
                write_pilot(root, folder, s, runs)
    write_pilot(root, folder, s, runs)


def training_curve(run: Path) -> list[dict]:
    """metrics.jsonl's logged steps (loss terms, MI bound), without the dev evaluations."""
    path = run / "metrics.jsonl"
    return [line for line in map(json.loads, read_text(path).splitlines()) if "loss" in line] if path.is_file() else []


def pilot_rows(root: Path, runs: list) -> list[dict]:
    rows = []
    for name, method, seed, _ in runs:
        run = root / name
        row = {"name": name, "method": method, "seed": seed}
        if (run / "summary.json").is_file():
            summary = json.loads(read_text(run / "summary.json"))
            config = json.loads(read_text(run / "config.json"))
            curve = training_curve(run)
            row |= {"config": config["config"], "resolved": config["resolved"], "best_step": summary["best_step"],
                    "dev_accuracy": summary["best_dev_accuracy"], "dev_robust": summary["best_dev_robust_accuracy"],
                    "feature": summary["feature"], "alpha": config["config"]["alpha"] if method == "rift" else None,
                    "train_minutes": summary["train_minutes"], "first_ce": curve[0]["ce"], "last_ce": curve[-1]["ce"]}
            if method == "rift":
                row |= {"first_mi_bound": curve[0]["mi_bound"], "last_mi_bound": curve[-1]["mi_bound"],
                        "max_mi_bound": max(line["mi_bound"] for line in curve)}
        for feature in CKA_FEATURES:
            if (run / f"cka-{feature}.json").is_file():
                row[f"cka_{feature}"] = json.loads(read_text(run / f"cka-{feature}.json"))["linear_cka"]
        for evaluation in PILOT_EVALS:
            results = run / "eval" / evaluation / "results.json"
            report = json.loads(read_text(results)) if results.is_file() else {}
            if report.get("complete"):
                metrics = report["metrics"]
                n = metrics[1]["examples"]
                row |= {f"{evaluation}_accuracy": metrics[1]["accuracy_under_attack"],
                        f"{evaluation}_se": binomial_se(metrics[1]["accuracy_under_attack"], n),
                        "examples": n, "clean_accuracy": metrics[0]["clean_accuracy"],
                        "clean_se": binomial_se(metrics[0]["clean_accuracy"], n)}
        rows.append(row)
    return rows


def paired_gaps(root: Path, rows: list[dict]) -> list[dict]:
    """Every rift run minus the adv run of its seed, on the same test sentences: the mean of the
    per-sentence differences (right after the attack, or before it for clean accuracy) and its
    standard error sd / sqrt(n)."""
    gaps = []
    for rift in (r for r in rows if r["method"] == "rift"):
        adv = next((r for r in rows if r["method"] == "adv" and r["seed"] == rift["seed"]), None)
        if adv is None:
            continue
        gap = {"run": rift["name"], "against": adv["name"]}
        for key, (evaluation, after) in {"clean": ("pwws", 0), **{e: (e, 1) for e in PILOT_EVALS}}.items():
            if f"{evaluation}_accuracy" in rift and f"{evaluation}_accuracy" in adv:
                ours, theirs = (example_outcomes(root / r["name"] / "eval" / evaluation) for r in (rift, adv))
                differences = [ours[i][after] - theirs[i][after] for i in ours]
                gap[key] = statistics.fmean(differences)
                gap[f"{key}_se"] = statistics.stdev(differences) / math.sqrt(len(differences))
        if len(gap) > 2:
            gaps.append(gap)
    return gaps


def write_pilot(root: Path, folder: Path, s: dict, runs: list) -> None:
    """results/sst2-pilot.{md,json,png} from what has finished under root."""
    rows = pilot_rows(root, runs)

    def with_se(row, key):
        p = row.get(f"{key}_accuracy")
        return None if p is None else f"{p:.3f} ± {row[f'{key}_se']:.3f}"

    def pair(gap, key):
        return f"{gap[key]:+.3f} ± {gap[f'{key}_se']:.3f}" if key in gap else None

    table = [{"run": r["name"], "seed": r["seed"], "feature": r.get("feature") if r["method"] == "rift" else "-",
              "alpha": r.get("alpha"), "best_step": r.get("best_step"), "dev": r.get("dev_accuracy"),
              "dev_robust": r.get("dev_robust"), "clean": with_se(r, "clean"),
              **{e: with_se(r, e) for e in PILOT_EVALS}, "cka_mean": r.get("cka_mean"), "cka_cls": r.get("cka_cls")}
             for r in rows]
    columns = {"run": "run", "seed": "seed", "feature": "S, T", "alpha": "alpha", "best_step": "kept step",
               "dev": "dev acc", "dev_robust": "dev ascc", "clean": "clean acc", **PILOT_COLUMNS,
               "cka_mean": "CKA mean", "cka_cls": "CKA cls"}
    terms = [{"run": r["name"], "first_ce": r.get("first_ce"), "last_ce": r.get("last_ce"),
              "first_mi_bound": r.get("first_mi_bound"), "max_mi_bound": r.get("max_mi_bound"),
              "last_mi_bound": r.get("last_mi_bound"), "minutes": r.get("train_minutes")} for r in rows]
    term_columns = {"run": "run", "first_ce": "CE, first 10 steps", "last_ce": "CE, last 10",
                    "first_mi_bound": "MI bound, first 10", "max_mi_bound": "MI bound, max",
                    "last_mi_bound": "MI bound, last 10", "minutes": "train min"}
    gaps = paired_gaps(root, rows)
    printed = format_table(table, columns) + "\n\ntraining terms (means over logged windows of 10 steps)\n" + \
        format_table(terms, term_columns)
    if gaps:
        printed += "\n\nrift minus adv of the same seed, paired on the same test sentences (± standard error)\n" + \
            format_table([{"run": g["run"], "against": g["against"], **{k: pair(g, k) for k in ("clean", *PILOT_EVALS)}}
                          for g in gaps], {"run": "run", "against": "minus", "clean": "clean acc", **PILOT_COLUMNS})
    folder.mkdir(parents=True, exist_ok=True)
    finished = sum(all(f"{e}_accuracy" in r for e in PILOT_EVALS) for r in rows)
    (folder / "sst2-pilot.json").write_text(json.dumps(
        {"settings": s, "runs": [{"name": n, "method": m, "seed": seed, "flags": f} for n, m, seed, f in runs],
         "evaluations": PILOT_EVALS, "rows": rows, "rift_minus_adv": gaps,
         "mi_bound": {r["name"]: [[line["step"], line["mi_bound"], line["ce"]] for line in training_curve(root / r["name"])]
                      for r in rows if r["method"] == "rift"}}, indent=2))
    (folder / "sst2-pilot.md").write_text(
        f"# SST-2 pilot: adv against rift when RIFT's term gets to work\n\n"
        f"Produced by `python bench.py pilot` ({date.today().isoformat()}; {finished} of {len(rows)} runs attacked). "
        f"Every run: the same {s['train_examples']} SST-2 training sentences, {s['steps']} steps of {s['batch_size']}, "
        f"lr {s['lr']}, beta {s['beta']:g}, ASCC as the training adversary; best/ is the checkpoint with the best "
        f"accuracy under ASCC on the same dev sentences, evaluated every {s['eval_every']} steps (`--select-on "
        f"robust`). rift trains its critics at their own learning rate (`--critic-lr`, results/critic-lr.md); "
        f"`S, T` is the feature RIFT's term sees (`--feature auto` resolves to the mean pool for "
        f"{DEFAULT_MODEL}; `rift-cls` keeps the frontier's [CLS]). Every model is attacked on the same "
        f"{s['test_examples']} test sentences (seed 42, at least 4 words): PWWS with WordNet and with the "
        f"counter-fitted table, and ASCC (evaluate.py --attack ascc). Accuracies ± binomial standard error; "
        f"differences paired on the sentences. CKA: linear CKA between the kept checkpoint's feature and the "
        f"pre-trained model's on the {s['dev_examples']} dev sentences, for both features.\n\n"
        f"```\n{printed}\n```\n\nThe MI bound and CE over the steps: sst2-pilot.png, and `mi_bound` in "
        f"sst2-pilot.json.\n")
    plot_pilot(rows, root, folder / "sst2-pilot.png")
    print(printed)


def plot_pilot(rows: list[dict], root: Path, path: Path) -> None:
    """The MI bound and the CE over the steps of every run, and the accuracy under each attack."""
    try:
        plt = pyplot()
    except UsageError as err:
        print(f"no figure: {err}")
        return
    figure, (bound, ce, bars) = plt.subplots(1, 3, figsize=(16, 4.5))
    for r in rows:
        curve = training_curve(root / r["name"])
        if not curve:
            continue
        style = "--" if "seed43" in r["name"] else "-"
        if r["method"] == "rift":
            bound.plot([c["step"] for c in curve], [c["mi_bound"] for c in curve], style, label=r["name"])
        ce.plot([c["step"] for c in curve], [c["ce"] for c in curve], style, label=r["name"])
    bound.set(xlabel="step", ylabel="nats", title="InfoNCE bound on I(S;T|Y), training windows")
    ce.set(xlabel="step", title="training CE")
    attacked = [r for r in rows if all(f"{e}_accuracy" in r for e in PILOT_EVALS)]
    width = 0.8 / max(len(attacked), 1)
    for n, r in enumerate(attacked):
        bars.bar([k + n * width for k in range(len(PILOT_EVALS))], [r[f"{e}_accuracy"] for e in PILOT_EVALS],
                 width=width, yerr=[r[f"{e}_se"] for e in PILOT_EVALS], label=r["name"], capsize=2)
    bars.set_xticks([k + 0.4 - width / 2 for k in range(len(PILOT_EVALS))], list(PILOT_COLUMNS.values()))
    bars.set(ylabel="accuracy under attack", title="500 test sentences")
    for ax in (bound, ce, bars):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
