"""What rift achieves, measured by running it: each table is a list of train.py and evaluate.py
runs (subprocesses, so each is exactly what a user would run), their numbers gathered into
results/*.md, .json and .png (the parity table, rift beside TextAttack, is parity.py's).
bench.py is the command line:

    python bench.py results     # standard / adv / rift (PGD) on SST-2, attacked      -> results/sst2-minilm.*
    python bench.py frontier    # adv and rift (ASCC) at several beta, attacked, CKA  -> results/sst2-frontier.*
    python bench.py plot RUN    # a train.py run's loss terms, MI bound, dev accuracy -> RUN/training.png

Every runner resumes: a run, evaluation or CKA that has finished is not repeated, and one cut short
goes on from its last save, so a table can be filled over several sessions (runner.py: how a runner
tells what has finished, and the page writer that keeps the text written below the tables).
"""

import json
import math
import statistics
from datetime import date
from pathlib import Path

import numpy as np

from cli import format_table, pyplot, save_figure
from data import UsageError
from rift import DEFAULT_MODEL, METHODS
from runner import (ATTACK_SEED, add_evaluation, data_flags, evaluated, example_outcomes, measured_cka, paired_difference,
                    recorded, run_cli, run_config, teacher_cka, tiny_model, trained, training_log, words_changed,
                    write_page)

# The results command: the same seed, subset and epochs for all three methods.
RESULTS = dict(task="sst2", train_examples=8000, epochs=1, seed=42, lr=5e-5, test_examples=500, eps=[0.02, 0.05, 0.1])
RESULTS_ATTACKS = [("pwws", "wordnet"), ("pwws", "counterfitted"), ("textfooler", "counterfitted")]


def first_recipe(lr: float) -> list[str]:
    """The tables below were made before train.py's defaults changed (studies.py): the checkpoint
    with the best clean dev accuracy, S and T at [CLS], the critics at the encoder's learning rate.
    These are those tables' settings, pinned, not defaults: a rerun reproduces the tables whatever
    train.py's defaults have become since."""
    return ["--select-on", "clean", "--feature", "cls", "--critic-lr", str(lr)]


# ---------------------------------------------------------------------------------------------
# The results table

def results(root: Path, results_dir: Path, data_dir: str | None, table_only: bool) -> None:
    """Train standard, adv and rift under root (unless finished), attack each, write the table."""
    r = RESULTS
    if table_only:
        write_results(root, results_dir)
        return
    data = data_flags(data_dir)
    for method in METHODS:
        run = root / f"{r['task']}-{method}"
        run_cli(["train.py", "--task", r["task"], "--method", method, "--max-train-examples", str(r["train_examples"]),
                 "--epochs", str(r["epochs"]), "--lr", str(r["lr"]), "--seed", str(r["seed"]), "--out", str(run),
                 *first_recipe(r["lr"]), *data], run)
        for attack, source in RESULTS_ATTACKS:
            run_cli(["evaluate.py", "--checkpoint", str(run), "--attack", attack, "--synonyms", source,
                     "--num-examples", str(r["test_examples"]), "--seed", str(r["seed"]),
                     "--out", str(run / "eval" / f"{attack}-{source}"), *data], run / "eval" / f"{attack}-{source}")
        run_cli(["evaluate.py", "--checkpoint", str(run), "--attack", "pgd", "--eps", *map(str, r["eps"]),
                 "--num-examples", str(r["test_examples"]), "--seed", str(r["seed"]),
                 "--out", str(run / "eval" / "pgd"), *data], run / "eval" / "pgd")
    write_results(root, results_dir)


def write_results(root: Path, folder: Path) -> None:
    """results/<task>-minilm.{md,json,png} from the finished runs and evaluations under root."""
    r = RESULTS
    runs = {method: root / f"{r['task']}-{method}" for method in METHODS}
    evaluations = [*(f"{attack}-{source}" for attack, source in RESULTS_ATTACKS), "pgd"]
    missing = [str(run) for run in runs.values() if trained(run) is None]
    missing += [str(run / "eval" / name) for run in runs.values() for name in evaluations
                if trained(run) is not None and evaluated(run / "eval" / name) is None]
    if missing:
        raise UsageError(f"nothing finished at {', '.join(missing)}: run python bench.py results")
    table, details, curves, eval_commits = [], [], {}, set()
    for method, run in runs.items():
        summary = trained(run)
        config = run_config(run)  # the whole training config: what made the checkpoint
        row = {"method": method, "dev_accuracy": summary["best_dev_accuracy"],
               "train_examples_per_s": summary["train_examples_per_s"], "train_minutes": summary["train_minutes"],
               "config": config["config"], "resolved": config["resolved"]}
        for attack, source in RESULTS_ATTACKS:
            evaluation = evaluated(run / "eval" / f"{attack}-{source}")
            eval_commits.add(str(evaluation["environment"]["git_commit"]))
            metrics = evaluation["metrics"]
            row["clean_accuracy"] = metrics[0]["clean_accuracy"]
            row[f"{attack}_{source}"] = metrics[1]["accuracy_under_attack"]
            row[f"{attack}_{source}_settings"] = evaluation["settings"]
            details.append({**metrics[1], "method": method, "attack": f"{attack}/{source}"})
        evaluation = evaluated(run / "eval" / "pgd")
        eval_commits.add(str(evaluation["environment"]["git_commit"]))
        row["pgd_settings"] = evaluation["settings"]
        pgd = evaluation["metrics"]
        for metrics in pgd[1:]:
            row[f"pgd_{metrics['eps']:g}"] = metrics["accuracy_under_attack"]
        curves[method] = [(0.0, pgd[0]["clean_accuracy"])] + [(m["eps"], m["accuracy_under_attack"]) for m in pgd[1:]]
        table.append(row)
    columns = {"method": "method", "dev_accuracy": "dev acc", "clean_accuracy": "clean acc",
               **{f"{a}_{s}": f"{a}/{s}" for a, s in RESULTS_ATTACKS},
               **{f"pgd_{eps:g}": f"pgd {eps:g}" for eps in r["eps"]},
               "train_examples_per_s": "train ex/s", "train_minutes": "train min"}
    detail_columns = {"method": "method", "attack": "attack", "attack_success_rate": "success rate",
                      "words_perturbed_pct": "% words perturbed", "avg_queries": "queries",
                      "successful": "succ", "failed": "fail", "skipped": "skip",
                      "seconds_per_example": "s/example", "model_time_share": "time in model"}
    env = run_config(runs["rift"])["environment"]
    word_settings = [row[f"{a}_{s}_settings"] for row in table for a, s in RESULTS_ATTACKS]
    pgd_settings = [row["pgd_settings"] for row in table]
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{r['task']}-minilm"
    (folder / f"{name}.json").write_text(json.dumps(
        {"settings": r, "attacks": RESULTS_ATTACKS, "table": table, "attack_details": details,
         "environment": env, "evaluation_commits": sorted(eval_commits)}, indent=2))
    model = recorded([row["config"] for row in table], "model", DEFAULT_MODEL)
    min_words = recorded(word_settings, "min_words", "evaluate.py's --min-words default")
    pgd_steps = recorded(pgd_settings, "pgd_steps", "evaluate.py's default number of")
    pgd_norm = recorded(pgd_settings, "pgd_norm", "l2").upper()  # evaluate.py's default norm is L2
    write_page(folder / f"{name}.md",
        f"# SST-2, {model}: standard vs adv vs rift\n\n"
        f"Produced by `python bench.py results` ({date.today().isoformat()}); each method trained on the same "
        f"{r['train_examples']} SST-2 train examples (seed {r['seed']}), epochs {r['epochs']}, lr {r['lr']}, "
        f"selected on the GLUE dev set, attacked on the same {r['test_examples']} test examples "
        f"(seed {r['seed']}, at least {min_words} words); word attacks: {words_changed(word_settings)}; PGD takes "
        f"{pgd_steps} steps on the word embeddings ({pgd_norm} radius per token) aimed at a wrong "
        f"label.\n\nMachine: {env['platform']}, {env['cpus']} CPUs, device "
        f"{env['device']}; python {env['python']}, torch {env['torch']}, transformers {env['transformers']}; "
        f"code: training {env['git_commit']}, evaluation {', '.join(sorted(eval_commits))}.\n\nAccuracy (columns after `clean acc`: accuracy under that attack):\n\n```\n"
        f"{format_table(table, columns)}\n```\n\nAttack details:\n\n```\n{format_table(details, detail_columns)}\n```\n")
    plot_results(curves, details, words_changed(word_settings), folder / f"{name}.png")
    print(format_table(table, columns))
    print(f"\n-> {folder / name}.md, .json, .png")


def plot_results(curves: dict, details: list[dict], cap: str, path: Path) -> None:
    try:
        plt = pyplot()
    except UsageError as err:
        print(f"no figure: {err}")
        return
    figure, (by_eps, by_attack) = plt.subplots(1, 2, figsize=(11, 4))
    for method, points in curves.items():
        by_eps.plot(*zip(*points), marker="o", label=method)
    by_eps.set(xlabel="PGD radius per token (L2)", ylabel="accuracy", title="embedding-space PGD")
    by_eps.legend()
    attack_names = list(dict.fromkeys(d["attack"] for d in details))
    for n, method in enumerate(curves):
        values = [next(d["accuracy_under_attack"] for d in details if d["method"] == method and d["attack"] == a)
                  for a in attack_names]
        by_attack.bar(np.arange(len(attack_names)) + n * 0.27, values, width=0.27, label=method)
    by_attack.set_xticks(np.arange(len(attack_names)) + 0.27, [name.replace("/", "\n") for name in attack_names])
    by_attack.set(ylabel="accuracy under attack", title=f"word substitution ({cap})")
    by_attack.margins(y=0.2)  # room for the legend above the bars
    by_attack.legend(ncols=len(curves), loc="upper center")
    figure.tight_layout()
    save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# The frontier: is RIFT better than adversarial training at the same clean accuracy?
#
# beta trades clean accuracy for robustness, so one run per method cannot tell the methods apart:
# a method is better when its (clean accuracy, accuracy under attack) points lie above the other's
# line. Every run below trains on the same SST-2 subset for the same steps, the robust ones against
# ASCC (the paper's adversary); each is selected on GLUE dev, attacked on the same test sentences,
# and measured for how much of the teacher its features keep (linear CKA, the paper's mechanism).
# Budget: about 2.5 CPU-hours of training on 2 cores (README: the measured cost of ASCC training).

PAPER_BETA = 10.0  # the paper's IMDB value: SST-2 is binary sentiment, like IMDB (SNLI's is 5)
# One epoch of 4,800 sentences: ASCC training runs at 4.2 examples/s on this 2-core CPU, so the 8
# robust runs take 2.5 hours. The genetic attack costs 9-20 s per sentence here, so it sees 100.
FRONTIER = dict(task="sst2", train_examples=4800, steps=150, batch_size=32, lr=5e-5, alpha=0.1, eval_every=50, save_every=25,
                betas=(1.0, 3.0, PAPER_BETA), seeds=(42, 43), dev_examples=872, extra_train=[], extra_eval=[],
                attack_examples={"pwws": 500, "pwws_counterfitted": 500, "genetic": 100})
# The same pipeline on a tiny random model in a minute: tests and CI keep it working.
FRONTIER_SMOKE = dict(FRONTIER, train_examples=64, steps=2, batch_size=8, eval_every=1, betas=(PAPER_BETA,),
                      seeds=(42,), dev_examples=16, extra_train=["--max-length", "32", "--keep-state"],  # the tests stop and resume them
                      extra_eval=["--population", "4", "--generations", "2"], attack_examples={"pwws": 4, "pwws_counterfitted": 4, "genetic": 3})
# name (its folder eval/<name>): evaluate.py's flags. ASCC trains against the counter-fitted
# neighbours; WordNet's synonyms are other words, a threat the adversary never showed the model.
FRONTIER_EVALS = {"pwws": ["--attack", "pwws"],  # evaluate.py's default PWWS (WordNet)
                  "pwws_counterfitted": ["--attack", "pwws", "--synonyms", "counterfitted"],  # the paper's PWWS
                  "genetic": ["--attack", "genetic", "--synonyms", "counterfitted"]}
FRONTIER_COLUMNS = {"pwws": "pwws/wordnet", "pwws_counterfitted": "pwws/counterfitted", "genetic": "genetic/counterfitted"}


def frontier_runs(settings: dict) -> list[dict]:
    """standard once; adv and rift at every beta with the first seed; both again with each other
    seed at the paper's beta. Cheapest and most telling first, so a partial table already says
    something."""
    first, *others = settings["seeds"]
    runs = [{"name": "standard", "method": "standard", "beta": None, "seed": first}]
    for beta in sorted(settings["betas"], key=lambda b: b != PAPER_BETA):
        runs += [{"name": f"{method}-beta{beta:g}", "method": method, "beta": beta, "seed": first} for method in ("adv", "rift")]
    for seed in others:
        runs += [{"name": f"{method}-beta{PAPER_BETA:g}-seed{seed}", "method": method, "beta": PAPER_BETA, "seed": seed}
                 for method in ("adv", "rift")]
    return runs


def frontier(root: Path, results_dir: Path, data_dir: str | None, model: str, smoke: bool, table_only: bool) -> None:
    """Two passes, each skipping what has finished: every run is trained, measured against the
    teacher and attacked with both PWWS first; the slow genetic attack comes after, so a session
    cut short still leaves a whole PWWS frontier."""
    s = FRONTIER_SMOKE if smoke else FRONTIER
    if table_only:
        write_frontier(root, results_dir, s)
        return
    if smoke:
        model = str(root / "tiny-model")
        if not (root / "tiny-model" / "config.json").is_file():
            tiny_model(root / "tiny-model")
    data = data_flags(data_dir)

    def attack(run: Path, name: str) -> None:
        run_cli(["evaluate.py", "--checkpoint", str(run), *FRONTIER_EVALS[name],
                 "--num-examples", str(s["attack_examples"][name]), "--seed", str(ATTACK_SEED),
                 "--out", str(run / "eval" / name), *s["extra_eval"], *data], run / "eval" / name)
        write_frontier(root, results_dir, s)  # each finished run's numbers land at once

    for r in frontier_runs(s):
        run = root / r["name"]
        robust = [] if r["method"] == "standard" else ["--adversary", "ascc", "--beta", str(r["beta"]), "--alpha", str(s["alpha"])]
        run_cli(["train.py", "--task", s["task"], "--model", model, "--method", r["method"], *robust,
                 "--max-train-examples", str(s["train_examples"]), "--max-steps", str(s["steps"]),
                 "--batch-size", str(s["batch_size"]), "--lr", str(s["lr"]), "--eval-every", str(s["eval_every"]),
                 "--seed", str(r["seed"]), "--save-every", str(s["save_every"]), "--out", str(run),
                 *first_recipe(s["lr"]), *s["extra_train"], *data], run)
        teacher_cka(run, s["dev_examples"], data_dir, "cls")  # the frontier's runs took S at h_[CLS]
        for name in FRONTIER_EVALS:
            if name != "genetic":
                attack(run, name)
    for r in frontier_runs(s):
        attack(root / r["name"], "genetic")


def frontier_rows(root: Path, settings: dict) -> list[dict]:
    """One row per run of the list, with what has finished (missing numbers are None): its whole
    training config ("config", "resolved") and each evaluation's settings ("<name>_settings"), so
    the JSON alone says how every number was made."""
    rows = []
    for r in frontier_runs(settings):
        run = root / r["name"]
        row = dict(r)
        if (summary := trained(run)) is not None:
            config = run_config(run)
            row |= {"dev_accuracy": summary["best_dev_accuracy"], "train_minutes": summary["train_minutes"],
                    "train_examples_per_s": summary["train_examples_per_s"], "config": config["config"],
                    "resolved": config["resolved"]}
        for name in FRONTIER_EVALS:
            if (report := evaluated(run / "eval" / name)) is not None:
                add_evaluation(row, name, report)
        if (cka := measured_cka(run, "cls")) is not None:  # the frontier's S and T were [CLS]
            row["teacher_cka"] = cka
        rows.append(row)
    return rows


def frontier_gaps(root: Path, rows: list[dict]) -> list[dict]:
    """rift minus adv at each beta and seed where both have finished, for clean accuracy (on the
    PWWS sentences) and under each attack. Both models met the same sentences, so the difference is
    paired: the mean of the per-sentence differences, with their standard error sd / sqrt(n)."""
    gaps = []
    for adv in (r for r in rows if r["method"] == "adv"):
        rift = next((r for r in rows if r["method"] == "rift" and (r["beta"], r["seed"]) == (adv["beta"], adv["seed"])), {})
        gap = {"beta": adv["beta"], "seed": adv["seed"]}
        for key, (folder, after) in {"clean": ("pwws", 0), **{name: (name, 1) for name in FRONTIER_EVALS}}.items():
            if f"{key}_accuracy" in adv and f"{key}_accuracy" in rift:
                gap[key], gap[f"{key}_se"] = paired_difference(root, rift["name"], adv["name"], folder, after)
        if len(gap) > 2:
            gaps.append(gap)
    return gaps


def search_overlap(root: Path, rows: list[dict]) -> list[dict]:
    """Genetic against PWWS/counter-fitted on the sentences both attacked. Their samples differ
    (100 sentences against 500), so the table's columns compare sentences as much as searches;
    here the two searches meet the same sentences and the same neighbours."""
    overlaps = []
    for row in rows:
        if "genetic_accuracy" in row and "pwws_counterfitted_accuracy" in row:
            genetic, pwws = (example_outcomes(root / row["name"] / "eval" / name) for name in ("genetic", "pwws_counterfitted"))
            common = genetic.keys() & pwws.keys()
            if common:
                overlaps.append({"run": row["name"], "sentences": len(common),
                                 "pwws_counterfitted": statistics.fmean(pwws[i][1] for i in common),
                                 "genetic": statistics.fmean(genetic[i][1] for i in common),
                                 "only_pwws_flips": sum(genetic[i][1] > pwws[i][1] for i in common),
                                 "only_genetic_flips": sum(pwws[i][1] > genetic[i][1] for i in common)})
    return overlaps


def write_frontier(root: Path, folder: Path, settings: dict) -> list[dict]:
    """results/sst2-frontier.{md,json,png} from what has finished under root."""
    rows = frontier_rows(root, settings)

    def with_se(row, key):
        p = row.get(f"{key}_accuracy")
        return None if p is None else f"{p:.3f} ± {row[f'{key}_se']:.3f}"

    table = [{"run": r["name"], "beta": r["beta"], "seed": r["seed"], "dev": r.get("dev_accuracy"),
              "clean": with_se(r, "clean"), **{name: with_se(r, name) for name in FRONTIER_EVALS},
              "cka": r.get("teacher_cka"), "minutes": r.get("train_minutes"), "ex_s": r.get("train_examples_per_s")}
             for r in rows]
    columns = {"run": "run", "beta": "beta", "seed": "seed", "dev": "dev acc", "clean": "clean acc",
               **FRONTIER_COLUMNS, "cka": "CKA with teacher",
               "minutes": "train min", "ex_s": "train ex/s"}
    printed = format_table(table, columns)
    gaps = frontier_gaps(root, rows)
    if gaps:
        printed += "\n\nrift minus adv, same beta and seed, paired on the same sentences (± standard error)\n" + format_table(
            [{"beta": g["beta"], "seed": g["seed"],
              **{key: f"{g[key]:+.3f} ± {g[f'{key}_se']:.3f}" if key in g else None for key in ("clean", *FRONTIER_EVALS)}}
             for g in gaps], {"beta": "beta", "seed": "seed", "clean": "clean acc", **FRONTIER_COLUMNS})
    overlaps = search_overlap(root, rows)
    if overlaps:
        printed += ("\n\ngenetic against pwws/counterfitted on the sentences both attacked (accuracy under attack; "
                    "sentences only one of them flips)\n" + format_table(
                        [o | {key: f"{o[key]:.3f}" for key in ("pwws_counterfitted", "genetic")} for o in overlaps],
                        {"run": "run", "sentences": "sentences", "pwws_counterfitted": "pwws/counterfitted",
                         "genetic": "genetic/counterfitted", "only_pwws_flips": "only pwws flips",
                         "only_genetic_flips": "only genetic flips"}))
    s = settings
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{s['task']}-frontier"
    finished = [r for r in rows if "teacher_cka" in r and all(f"{a}_accuracy" in r for a in FRONTIER_EVALS)]
    (folder / f"{name}.json").write_text(json.dumps({"settings": s, "paper_beta": PAPER_BETA, "evaluations": FRONTIER_EVALS,
                                                     "runs": rows, "rift_minus_adv": gaps,
                                                     "genetic_against_pwws": overlaps}, indent=2))
    configs = [r.get("config") for r in rows]
    evaluations = [r.get(f"{a}_settings") for r in rows for a in FRONTIER_EVALS]
    genetic = [r.get("genetic_settings") for r in rows]
    ascc_steps = recorded([c for c in configs if c and c["method"] != "standard"], "ascc_steps", "train.py's default")
    population = recorded(genetic, "population", "evaluate.py's default")
    generations = recorded(genetic, "generations", "evaluate.py's default")
    min_words = recorded(evaluations, "min_words", "evaluate.py's --min-words default")
    write_page(folder / f"{name}.md",
        f"# SST-2, {recorded(configs, 'model', DEFAULT_MODEL)}: the robustness / accuracy frontier of adv and rift "
        f"(ASCC)\n\n"
        f"Produced by `python bench.py frontier` ({date.today().isoformat()}; {len(finished)} of {len(rows)} runs "
        f"finished). Every run: the same {s['train_examples']} SST-2 training sentences, {s['steps']} steps of "
        f"{s['batch_size']}, lr {s['lr']}, dev accuracy every {s['eval_every']} steps, the best on GLUE dev kept; "
        f"adv and rift against ASCC ({ascc_steps} Adam steps, counter-fitted neighbours), rift with alpha "
        f"{s['alpha']}; beta {PAPER_BETA:g} is the paper's (IMDB). Every model is attacked on the same test sentences, "
        f"drawn with seed {ATTACK_SEED} among those of at least {min_words} "
        f"words, {words_changed(evaluations)}: `pwws/wordnet` (evaluate.py's "
        f"default PWWS) on {s['attack_examples']['pwws']}, where the clean accuracy is measured too, "
        f"`pwws/counterfitted` (the same search with the table ASCC trains on) on "
        f"{s['attack_examples']['pwws_counterfitted']}, and `genetic` (the genetic attack with the counter-fitted "
        f"table, no LM; population {population}, "
        f"{generations} iterations) on "
        f"{s['attack_examples']['genetic']}, drawn the same way. "
        f"Accuracies ± their binomial standard error sqrt(p(1-p)/n). CKA: linear CKA between the checkpoint's "
        f"[CLS] features and the pre-trained model's on the first {s['dev_examples']} dev sentences "
        f"(1 = the teacher's features up to rotation and scale). Train minutes and examples/s are wall time on "
        f"whatever machine ran each run, at times shared with other work: `python bench.py` measures cost.\n\n"
        f"```\n{printed}\n```\n")
    plot_frontier(rows, folder / f"{name}.png")
    print(printed)
    print(f"\n-> {folder / name}.md, .json" + (", .png" if (folder / f"{name}.png").is_file() else ""))
    return rows


def plot_frontier(rows: list[dict], path: Path) -> None:
    """Clean accuracy against accuracy under each attack, one line per method through its betas,
    and the features' CKA with the teacher against beta; hollow markers are the other seeds."""
    try:
        plt = pyplot()
    except UsageError as err:
        print(f"no figure: {err}")
        return
    panels = len(FRONTIER_EVALS) + 1
    figure, axes = plt.subplots(math.ceil(panels / 2), 2, figsize=(10, 4.2 * math.ceil(panels / 2)), squeeze=False)
    axes = axes.ravel()
    colours = {"standard": "black", "adv": "tab:blue", "rift": "tab:red"}
    first_seed = rows[0]["seed"]
    for ax, attack in zip(axes, FRONTIER_EVALS):
        for method, colour in colours.items():
            done = [r for r in rows if r["method"] == method and f"{attack}_accuracy" in r]
            for seeds, style in (([r for r in done if r["seed"] == first_seed], "-o"),
                                 ([r for r in done if r["seed"] != first_seed], "o")):
                seeds.sort(key=lambda r: r["beta"] or 0)
                if not seeds:
                    continue
                ax.errorbar([r["clean_accuracy"] for r in seeds], [r[f"{attack}_accuracy"] for r in seeds],
                            xerr=[r["clean_se"] for r in seeds], yerr=[r[f"{attack}_se"] for r in seeds], fmt=style,
                            color=colour, capsize=2, mfc=colour if style == "-o" else "white",
                            label=method if style == "-o" else f"{method}, other seed")
                for r in seeds:
                    if r["beta"] is not None and style == "-o":
                        ax.annotate(f"{r['beta']:g}", (r["clean_accuracy"], r[f"{attack}_accuracy"]),
                                    textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
        ax.set(xlabel="clean accuracy", ylabel=f"accuracy under {FRONTIER_COLUMNS[attack]}",
               title=f"{FRONTIER_COLUMNS[attack]} (labels: beta)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no model attacked yet", ha="center", va="center", transform=ax.transAxes)
    cka = axes[len(FRONTIER_EVALS)]
    for unused in axes[panels:]:
        unused.remove()
    for method, colour in colours.items():
        done = sorted([r for r in rows if r["method"] == method and "teacher_cka" in r and r["seed"] == first_seed],
                      key=lambda r: r["beta"] or 0)
        if method == "standard" and done:
            cka.axhline(done[0]["teacher_cka"], color=colour, linestyle="--", label=method)
        elif done:
            cka.plot([r["beta"] for r in done], [r["teacher_cka"] for r in done], "-o", color=colour, label=method)
        others = [r for r in rows if r["method"] == method and "teacher_cka" in r and r["seed"] != first_seed]
        if others:
            cka.plot([r["beta"] for r in others], [r["teacher_cka"] for r in others], "o", color=colour, mfc="white",
                     label=f"{method}, other seed")
    cka.set(xscale="log", xlabel="beta", ylabel="linear CKA of S with the teacher's T", title="what the features keep")
    if cka.get_legend_handles_labels()[0]:  # nothing measured yet: no legend
        cka.legend()
    figure.tight_layout()
    save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# Training curves

def plot_run(run: Path) -> None:
    plt = pyplot()
    records = training_log(run)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "dev_accuracy" in r]
    if not steps:
        raise UsageError(f"{run} has no logged steps in a metrics.jsonl: is it a train.py run folder?")
    pulled = [r for r in steps if "pull_ce" in r]  # train.py --log-pulls
    figure, (losses, mutual_information, accuracy, *pull_axes) = plt.subplots(
        1, 5 if pulled else 3, figsize=(23 if pulled else 14, 4))
    for term in ("loss", "ce", "kl", "mi_nce"):
        if term in steps[0]:
            losses.plot([r["step"] for r in steps], [r[term] for r in steps], label=term)
    losses.set(xlabel="step", title="loss terms")
    losses.legend()
    if "mi_bound" in steps[0]:
        mutual_information.plot([r["step"] for r in steps], [r["mi_bound"] for r in steps])
    mutual_information.set(xlabel="step", title="InfoNCE bound on I(S;T|Y), nats")
    accuracy.plot([r["step"] for r in evals], [r["dev_accuracy"] for r in evals], marker="o")
    accuracy.set(xlabel="step", title="dev accuracy")
    if pulled:
        pulls, cosines = pull_axes
        for prefix, axis in (("pull_", pulls), ("cos_", cosines)):
            for key in [key for key in pulled[-1] if key.startswith(prefix)]:
                axis.plot([r["step"] for r in pulled], [r[key] for r in pulled], label=key.removeprefix(prefix))
            axis.legend()
        pulls.set(xlabel="step", yscale="log", title="each weighted term's gradient norm on the encoder")
        cosines.set(xlabel="step", title="cosine between two terms' gradients")
    figure.tight_layout()
    save_figure(figure, run / "training.png")
    print(f"-> {run / 'training.png'}")
