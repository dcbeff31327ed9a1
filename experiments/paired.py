"""The page of a study that pairs each run with the run it names, on the same examples (the pilot,
SNLI, the long run, the stall studies and the GPU's SNLI): one row per run (its kept step, dev
accuracies, the loss terms at the start and end, CKA, each attack), the training terms, the paired
differences, and a figure of the MI bound and the CE over the steps; and the command that runs
such a study.
"""

import argparse
from dataclasses import replace
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import (ATTACK_SEED, ATTACKS, WORST_CASE, Study, add_evaluations, add_worst_case, draw, measured_cka, paired_gaps, read_document,
                   recorded, run_config, run_study, signed_with_se, smoke_model, today, trained, training_curve,
                   parser, with_se, words_changed, write_document, write_page)

from cli import format_table, save_figure

LABELS = {name: label for name, (_, label) in ATTACKS.items()} | {WORST_CASE: "worst case"}  # columns and bars


def paired_rows(study: Study, root: Path) -> list[dict]:
    """One row per run with what has finished: its whole training config, the kept step, dev
    accuracies, the loss terms at the start and end, CKA and each attack's accuracy."""
    rows = []
    for run in study.runs:
        out = root / run.name
        row = {"name": run.name, "method": run.method, "seed": run.seed, "against": run.against}
        if (summary := trained(out)) is not None:
            config, curve = run_config(out), training_curve(out)
            row |= {"config": config["config"], "resolved": config["resolved"], "best_step": summary["best_step"],
                    "dev_accuracy": summary["best_dev_accuracy"], "dev_robust": summary["best_dev_robust_accuracy"],
                    "feature": summary["feature"], "alpha": config["config"]["alpha"] if run.method == "rift" else None,
                    "alpha_ramp_steps": config["config"]["alpha_ramp_steps"],
                    "train_minutes": summary["train_minutes"], "first_ce": curve[0]["ce"], "last_ce": curve[-1]["ce"]}
            if run.method == "rift":
                row |= {"first_mi_bound": curve[0]["mi_bound"], "last_mi_bound": curve[-1]["mi_bound"],
                        "max_mi_bound": max(line["mi_bound"] for line in curve)}
        for feature in study.cka_features:
            if (cka := measured_cka(out, feature)) is not None:
                row[f"cka_{feature}"] = cka
        add_evaluations(row, out, study.evaluations)
        add_worst_case(row, out, study.evaluations)
        rows.append(row)
    return rows


def design_settings(train: list[str], rows: list[dict]) -> dict:
    """The fields of a study's design paragraph: its train.py flags (--max-steps 150 -> max_steps),
    what they imply (the selection steps, the epochs), and what the finished runs recorded beyond
    them (train.py's defaults), so the page states the settings that made its numbers."""
    settings = {flag.lstrip("-").replace("-", "_"): value for flag, value in zip(train[::2], train[1::2])}
    steps, every = int(settings["max_steps"]), int(settings["eval_every"])
    settings["max_train_examples"] = int(settings["max_train_examples"])  # 4,800 on the page
    selection = [str(step) for step in range(every, steps + 1, every)]
    settings |= {"selection_steps": " and ".join(filter(None, (", ".join(selection[:-1]), selection[-1]))),
                 "epochs": steps * int(settings["batch_size"]) / int(settings["max_train_examples"])}
    configs, resolved = [r.get("config") for r in rows], [r.get("resolved") for r in rows]
    rift = [r.get("config") for r in rows if r["method"] == "rift"]
    return {"critic_lr": recorded(rift, "critic_lr", "train.py's default"),
            "select_examples": recorded(configs, "select_examples", "train.py's default number of"),
            "max_length": recorded(resolved, "max_length", "the task's default"),
            "model": recorded(configs, "model", "train.py's default model")} | settings


def write_paired(study: Study, root: Path, folder: Path) -> dict:
    """results/<study>.{json,md,png} from what has finished under root."""
    rows = paired_rows(study, root)
    document = write_document(folder, study.name, {
        "study": study.name, "date": today(), "train": study.train, "evaluations": study.evaluations,
        "runs": [vars(run) for run in study.runs], "rows": rows,
        "paired_differences": paired_gaps(root, rows, study.evaluations),
        "curves": {r["name"]: [[line["step"], line["ce"], line.get("mi_bound")] for line in training_curve(root / r["name"])]
                   for r in rows}})
    render_paired(study, document, folder)
    return document


def render_paired(study: Study, document: dict, folder: Path) -> None:
    rows, evaluations = document["rows"], document["evaluations"]

    def alpha(row):
        if row.get("alpha") is None or not row.get("alpha_ramp_steps"):
            return row.get("alpha")
        return f"{row['alpha']}, ramp {row['alpha_ramp_steps']}"

    attack_columns = {name: LABELS[name] for name in evaluations}
    if any(f"{WORST_CASE}_accuracy" in r for r in rows):  # AutoAttack's rule over the attacks of the row
        attack_columns[WORST_CASE] = LABELS[WORST_CASE]
    table = [{"run": r["name"], "seed": r["seed"], "feature": r.get("feature") if r["method"] == "rift" else "-",
              "alpha": alpha(r), "best_step": r.get("best_step"), "dev": r.get("dev_accuracy"),
              "dev_robust": r.get("dev_robust"), "clean": with_se(r, "clean"),
              **{name: with_se(r, name) for name in attack_columns},
              "cka_mean": r.get("cka_mean"), "cka_cls": r.get("cka_cls")} for r in rows]
    columns = {"run": "run", "seed": "seed", "feature": "S, T", "alpha": "alpha", "best_step": "kept step",
               "dev": "dev acc", "dev_robust": "dev robust", "clean": "clean acc", **attack_columns,
               "cka_mean": "CKA mean", "cka_cls": "CKA cls"}
    terms = {"first_ce": "CE, first window", "last_ce": "CE, last window", "first_mi_bound": "MI bound, first window",
             "max_mi_bound": "MI bound, max", "last_mi_bound": "MI bound, last window"}
    printed = format_table(table, columns) + "\n\ntraining terms (means over each logged window of steps)\n" + \
        format_table([{"run": r["name"], **{key: r.get(key) for key in terms}, "minutes": r.get("train_minutes")}
                      for r in rows], {"run": "run", **terms, "minutes": "train min"})
    if gaps := document["paired_differences"]:
        printed += "\n\neach run minus the run it is compared with, paired on the same examples (± standard error)\n" + \
            format_table([{"run": g["run"], "against": g["against"],
                           **{key: signed_with_se(g, key) for key in ("clean", *attack_columns)}} for g in gaps],
                         {"run": "run", "against": "minus", "clean": "clean acc", **attack_columns})
    attacked = sum(all(f"{name}_accuracy" in r for name in evaluations) for r in rows)
    settings = [r.get(f"{name}_settings") for r in rows for name in evaluations]
    min_words = recorded(settings, "min_words", "evaluate.py's --min-words default")
    write_page(folder / f"{study.name}.md",
        f"# {study.title}\n\nProduced by `python {study.command}` "
        f"({document['date']}; {attacked} of {len(rows)} runs attacked). "
        f"{study.design.format(**design_settings(document['train'], rows))}\n\n"
        f"Every run's train.py flags: `{' '.join(document['train'])}`, then its own (`runs` in {study.name}.json). "
        f"Attacks (evaluate.py, seed {ATTACK_SEED}, examples of at least {min_words} words, "
        f"{words_changed(settings)}): "
        + "; ".join(f"`{name}` = `{' '.join(flags)}` on {n}" for name, (flags, n) in evaluations.items())
        + f". Accuracies ± binomial standard error; differences paired on the examples both models met. "
        f"`kept step`: the evaluation best/ holds; `dev robust`: its accuracy under the selection attack. "
        + ("`worst case`: robust only if classified right and broken by none of the attacks (AutoAttack's rule), on "
           "the examples every attack met. " if WORST_CASE in attack_columns else "") +
        f"CKA: linear CKA between the kept checkpoint's feature and the pre-trained model's on {study.cka_examples} "
        f"dev examples, for both features.\n\n```\n{printed}\n```\n\nThe CE and the MI bound over the steps: "
        f"{study.name}.png, and `curves` ([step, ce, mi_bound]) in {study.name}.json.\n")
    draw(plot_paired, document, folder / f"{study.name}.png")
    print(printed)


def plot_paired(plt, document: dict, path: Path) -> None:
    """The MI bound and the CE over the steps of every run, and the accuracy under each attack and
    in the worst case over them."""
    figure, (bound, ce, bars) = plt.subplots(1, 3, figsize=(16, 4.5))
    rows, names = document["rows"], list(document["evaluations"])
    if any(f"{WORST_CASE}_accuracy" in r for r in rows):
        names.append(WORST_CASE)
    for r in rows:
        if not (curve := document["curves"][r["name"]]):
            continue
        style = "-" if r["seed"] == rows[0]["seed"] else "--"
        if r["method"] == "rift":
            bound.plot([c[0] for c in curve], [c[2] for c in curve], style, label=r["name"])
        ce.plot([c[0] for c in curve], [c[1] for c in curve], style, label=r["name"])
    bound.set(xlabel="step", ylabel="nats", title="InfoNCE bound on I(S;T|Y), training windows")
    ce.set(xlabel="step", title="training CE")
    attacked = [r for r in rows if all(f"{name}_accuracy" in r for name in names)]
    width = 0.8 / max(len(attacked), 1)
    for n, r in enumerate(attacked):
        bars.bar([k + n * width for k in range(len(names))], [r[f"{name}_accuracy"] for name in names],
                 width=width, yerr=[r[f"{name}_se"] for name in names], label=r["name"], capsize=2)
    bars.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], [LABELS[name] for name in names])
    bars.set(ylabel="accuracy under attack", title="the same test examples")
    for ax in (bound, ce, bars):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def run_paired(study: Study, args: argparse.Namespace) -> None:
    """A paired study's command: run it (or with --table-only only write its page), its runs under --runs."""
    if args.smoke:
        study = replace(study, **study.smoke)
    if args.table_only:
        render_paired(study, read_document(args.results_dir, study.name), args.results_dir)
        return
    model = smoke_model(args.runs) if args.smoke else args.model
    run_study(study, model, args.data_dir, args.runs, args.results_dir,
              lambda: write_paired(study, args.runs, args.results_dir))


def paired_command(study: Study, description: str, runs: str):
    """(parse_args, main): the command line of a paired study whose run folders default to `runs`."""
    def parse_args(argv=None) -> argparse.Namespace:
        return parser(description, runs=runs).parse_args(argv)

    def main(argv=None) -> None:
        run_paired(study, parse_args(argv))
    return parse_args, main
