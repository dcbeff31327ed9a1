"""The frontier: is RIFT better than adversarial training at the same clean accuracy? adv and rift
(ASCC) at several beta, attacked, their features' CKA with the teacher -> results/sst2-frontier.*

    python experiments/frontier.py               # train, attack and tabulate what has not finished
    python experiments/frontier.py --table-only  # the page and figure from results/sst2-frontier.json

beta trades clean accuracy for robustness, so one run per method cannot tell the methods apart: a
method is better when its (clean accuracy, accuracy under attack) points lie above the other's
line. Every run trains on the same SST-2 subset for the same steps, the robust ones against ASCC
(the paper's adversary); each is selected on GLUE dev, attacked on the same test sentences, and
measured for how much of the teacher its features keep (linear CKA, the paper's mechanism).
"""

import math
import statistics

# study first: it puts the repository root, and so the core, on sys.path
from study import (ATTACKS, OTHER_SEED, SMOKE_GENETIC, Run, Study, add_evaluations, draw, example_outcomes,
                   measured_cka, paired_gaps, parser, read_document, recorded, run_config, run_study, signed_with_se,
                   smoke_model, today, trained, with_se, words_changed, write_document, write_page)

from attacks import GENERATIONS, POPULATION
from cli import SEED, format_table, run_command, save_figure
from results import first_recipe
from rift import ALPHA, BETA, DEFAULT_MODEL

# The slow genetic attack sees 100 sentences, both PWWS 500; the genetic attack runs last.
FRONTIER = dict(task="sst2", train_examples=4800, steps=150, batch_size=32, lr=5e-5, alpha=ALPHA, eval_every=50,
                save_every=25, betas=(1.0, 3.0, BETA), seeds=(SEED, OTHER_SEED), dev_examples=872, extra_train=[],
                extra_eval=[], attack_examples={"pwws": 500, "pwws_counterfitted": 500, "genetic": 100})
FRONTIER_SMOKE = dict(FRONTIER, train_examples=64, steps=2, batch_size=8, eval_every=1, betas=(BETA,), seeds=(SEED,),
                      dev_examples=16, extra_train=["--max-length", "32", "--keep-state"],  # the tests stop, resume
                      extra_eval=list(SMOKE_GENETIC),
                      attack_examples={"pwws": 4, "pwws_counterfitted": 4, "genetic": 3})


def frontier_runs(settings: dict) -> list[dict]:
    """standard once; adv and rift at every beta with the first seed; both again with each other
    seed at the paper's beta. Cheapest and most telling first, so a partial table already says
    something. rift is compared with adv of its beta and seed."""
    first, *others = settings["seeds"]
    pairs = [(beta, first) for beta in sorted(settings["betas"], key=lambda b: b != BETA)]
    pairs += [(BETA, seed) for seed in others]
    runs = [{"name": "standard", "method": "standard", "beta": None, "seed": first, "against": None}]
    for beta, seed in pairs:
        suffix = f"-beta{beta:g}" + (f"-seed{seed}" if seed != first else "")
        runs += [{"name": f"adv{suffix}", "method": "adv", "beta": beta, "seed": seed, "against": None},
                 {"name": f"rift{suffix}", "method": "rift", "beta": beta, "seed": seed, "against": f"adv{suffix}"}]
    return runs


def frontier_study(s: dict) -> Study:
    robust = lambda beta: ("--adversary", "ascc", "--beta", str(beta), "--alpha", str(s["alpha"]))
    return Study(
        name=f"{s['task']}-frontier", command="experiments/frontier.py",
        train=("--task", s["task"], "--max-train-examples", str(s["train_examples"]), "--max-steps", str(s["steps"]),
               "--batch-size", str(s["batch_size"]), "--lr", str(s["lr"]), "--eval-every", str(s["eval_every"]),
               "--save-every", str(s["save_every"]), *first_recipe(s["lr"]), *s["extra_train"]),
        runs=tuple(Run(r["name"], r["method"], r["seed"], robust(r["beta"]) if r["beta"] else (), r["against"])
                   for r in frontier_runs(s)),
        evaluations={name: ((*ATTACKS[name][0], *s["extra_eval"]), n) for name, n in s["attack_examples"].items()},
        cka_features=("cls",), cka_examples=s["dev_examples"], last=("genetic",))  # the first recipe's S and T


def frontier_rows(root, settings: dict) -> list[dict]:
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
        add_evaluations(row, run, settings["attack_examples"])
        if (cka := measured_cka(run, "cls")) is not None:
            row["teacher_cka"] = cka
        rows.append(row)
    return rows


def frontier_gaps(root, rows: list[dict], evaluations) -> list[dict]:
    """rift minus adv at each beta and seed where both have finished, paired on the same sentences."""
    by_name = {row["name"]: row for row in rows}
    return [{"beta": by_name[gap["run"]]["beta"], "seed": by_name[gap["run"]]["seed"],
             **{key: value for key, value in gap.items() if key not in ("run", "against")}}
            for gap in paired_gaps(root, rows, evaluations)]


def search_overlap(root, rows: list[dict]) -> list[dict]:
    """Genetic against PWWS/counter-fitted on the sentences both attacked. Their samples differ
    (100 sentences against 500), so the table's columns compare sentences as much as searches;
    here the two searches meet the same sentences and the same neighbours."""
    overlaps = []
    for row in rows:
        if "genetic_accuracy" in row and "pwws_counterfitted_accuracy" in row:
            genetic, pwws = (example_outcomes(root / row["name"] / "eval" / name)
                             for name in ("genetic", "pwws_counterfitted"))
            common = genetic.keys() & pwws.keys()
            if common:
                overlaps.append({"run": row["name"], "sentences": len(common),
                                 "pwws_counterfitted": statistics.fmean(pwws[i][1] for i in common),
                                 "genetic": statistics.fmean(genetic[i][1] for i in common),
                                 "only_pwws_flips": sum(genetic[i][1] > pwws[i][1] for i in common),
                                 "only_genetic_flips": sum(pwws[i][1] > genetic[i][1] for i in common)})
    return overlaps


def write_frontier(root, folder, settings: dict) -> list[dict]:
    """results/sst2-frontier.{json,md,png} from what has finished under root."""
    rows = frontier_rows(root, settings)
    document = write_document(folder, f"{settings['task']}-frontier", {
        "settings": settings, "paper_beta": BETA, "date": today(),
        "evaluations": {name: list(ATTACKS[name][0]) for name in settings["attack_examples"]}, "runs": rows,
        "rift_minus_adv": frontier_gaps(root, rows, settings["attack_examples"]),
        "genetic_against_pwws": search_overlap(root, rows)})
    render(document, folder)
    return rows


def render(document: dict, folder) -> None:
    s, rows, evaluations = document["settings"], document["runs"], document["evaluations"]
    columns = {name: ATTACKS[name][1] for name in evaluations}
    table = [{"run": r["name"], "beta": r["beta"], "seed": r["seed"], "dev": r.get("dev_accuracy"),
              "clean": with_se(r, "clean"), **{name: with_se(r, name) for name in evaluations},
              "cka": r.get("teacher_cka"), "minutes": r.get("train_minutes"), "ex_s": r.get("train_examples_per_s")}
             for r in rows]
    printed = format_table(table, {"run": "run", "beta": "beta", "seed": "seed", "dev": "dev acc", "clean": "clean acc",
                                   **columns, "cka": "CKA with teacher", "minutes": "train min", "ex_s": "train ex/s"})
    if gaps := document["rift_minus_adv"]:
        printed += "\n\nrift minus adv, same beta and seed, paired on the same sentences (± standard error)\n" + format_table(
            [{"beta": g["beta"], "seed": g["seed"], **{key: signed_with_se(g, key) for key in ("clean", *evaluations)}}
             for g in gaps], {"beta": "beta", "seed": "seed", "clean": "clean acc", **columns})
    if overlaps := document["genetic_against_pwws"]:
        printed += ("\n\ngenetic against pwws/counterfitted on the sentences both attacked (accuracy under attack; "
                    "sentences only one of them flips)\n" + format_table(
                        [o | {key: f"{o[key]:.3f}" for key in ("pwws_counterfitted", "genetic")} for o in overlaps],
                        {"run": "run", "sentences": "sentences", "pwws_counterfitted": "pwws/counterfitted",
                         "genetic": "genetic/counterfitted", "only_pwws_flips": "only pwws flips",
                         "only_genetic_flips": "only genetic flips"}))
    finished = [r for r in rows if "teacher_cka" in r and all(f"{a}_accuracy" in r for a in evaluations)]
    configs = [r.get("config") for r in rows]
    settings = [r.get(f"{a}_settings") for r in rows for a in evaluations]
    genetic = [r.get("genetic_settings") for r in rows]
    ascc_steps = recorded([c for c in configs if c and c["method"] != "standard"], "ascc_steps", "train.py's default")
    search = (f"population {recorded(genetic, 'population', POPULATION)}, "
              f"{recorded(genetic, 'generations', GENERATIONS)} iterations")
    if search == f"population {POPULATION}, {GENERATIONS} iterations":
        search = f"evaluate.py's defaults: {search}"
    min_words = recorded(settings, "min_words", "evaluate.py's --min-words default")
    name = f"{s['task']}-frontier"
    write_page(folder / f"{name}.md",
        f"# SST-2, {recorded(configs, 'model', DEFAULT_MODEL)}: the robustness / accuracy frontier of adv and rift "
        f"(ASCC)\n\n"
        f"Produced by `python experiments/frontier.py` ({document['date']}; {len(finished)} of {len(rows)} runs "
        f"finished). Every run: the same {s['train_examples']} SST-2 training sentences, {s['steps']} steps of "
        f"{s['batch_size']}, lr {s['lr']}, dev accuracy every {s['eval_every']} steps, the best on GLUE dev kept; "
        f"adv and rift against ASCC ({ascc_steps} Adam steps, counter-fitted neighbours), rift with alpha "
        f"{s['alpha']}; beta {document['paper_beta']:g} is the paper's (IMDB). Every model is attacked on the same "
        f"test sentences, drawn with seed {SEED} among those of at least {min_words} words, {words_changed(settings)}: "
        f"`pwws/wordnet` (evaluate.py's default PWWS) on {s['attack_examples']['pwws']}, where the clean accuracy is "
        f"measured too, `pwws/counterfitted` (the same search with the table ASCC trains on) on "
        f"{s['attack_examples']['pwws_counterfitted']}, and `genetic` (the genetic attack with the counter-fitted "
        f"table, no LM; {search}) on {s['attack_examples']['genetic']}, drawn the same way. "
        f"Accuracies ± their binomial standard error sqrt(p(1-p)/n). CKA: linear CKA between the checkpoint's "
        f"[CLS] features and the pre-trained model's on the first {s['dev_examples']} dev sentences "
        f"(1 = the teacher's features up to rotation and scale). Train minutes and examples/s are wall time on "
        f"whatever machine ran each run, at times shared with other work: `python bench.py` measures cost.\n\n"
        f"```\n{printed}\n```\n")
    draw(plot_frontier, rows, list(evaluations), folder / f"{name}.png")
    print(printed)
    print(f"\n-> {folder / name}.md, .json" + (", .png" if (folder / f"{name}.png").is_file() else ""))


def plot_frontier(plt, rows: list[dict], evaluations: list[str], path) -> None:
    """Clean accuracy against accuracy under each attack, one line per method through its betas,
    and the features' CKA with the teacher against beta; hollow markers are the other seeds."""
    panels = len(evaluations) + 1
    figure, axes = plt.subplots(math.ceil(panels / 2), 2, figsize=(10, 4.2 * math.ceil(panels / 2)), squeeze=False)
    axes = axes.ravel()
    colours = {"standard": "black", "adv": "tab:blue", "rift": "tab:red"}
    first_seed = rows[0]["seed"]
    for ax, attack in zip(axes, evaluations):
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
        ax.set(xlabel="clean accuracy", ylabel=f"accuracy under {ATTACKS[attack][1]}",
               title=f"{ATTACKS[attack][1]} (labels: beta)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no model attacked yet", ha="center", va="center", transform=ax.transAxes)
    cka = axes[len(evaluations)]
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


def parse_args(argv=None):
    return parser(__doc__, runs="runs/frontier").parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    settings = FRONTIER_SMOKE if args.smoke else FRONTIER
    if args.table_only:
        render(read_document(args.results_dir, f"{settings['task']}-frontier"), args.results_dir)
        return
    model = smoke_model(args.runs) if args.smoke else args.model
    run_study(frontier_study(settings), model, args.data_dir, args.runs, args.results_dir,
              lambda: write_frontier(args.runs, args.results_dir, settings))


if __name__ == "__main__":
    run_command(main)
