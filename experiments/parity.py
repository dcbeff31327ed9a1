"""Parity with TextAttack: its PWWS or DeepWordBug (0.3.11, run by experiments/textattack_peer.py in
the offline peer harness ../shared/peers/textattack, a check run beside rift and never a dependency)
and rift's on the same models and sentences.

  - PWWS -> results/parity-sst2.*: how often the two tools' outcomes agree, and how much faster rift is.
  - DeepWordBug -> results/parity-deepwordbug.*: its edits are random, so outcomes cannot match one by
    one; do the success rates agree within two standard errors, and how much faster is rift?

    python experiments/parity.py --checkpoints RUN RUN                      # PWWS, both synonym sources
    python experiments/parity.py --checkpoints RUN RUN --attack deepwordbug
    python experiments/parity.py --table-only [--attack deepwordbug]        # the page from its JSON
"""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import (REPO, binomial_se, data_flags, evaluated, example_statuses, parser, read_document, run_cli,
                   run_config, signed_with_se, write_document, write_page)

import attacks
import synonyms
from cli import SEED, at_least, environment, format_table, pick_device, run_command
from data import TASKS, UsageError, load_split, read_text

PAGES = {"pwws": "parity-sst2", "deepwordbug": "parity-deepwordbug"}
VARIANTS = {"pwws": ("wordnet", "counterfitted"), "deepwordbug": ("characters",)}  # each attack's runs per model
PEER_CALL = REPO / "experiments" / "textattack_peer.py"  # the harness's call, copied
REPORTED = ("clean_accuracy", "accuracy_under_attack", "attack_success_rate", "words_perturbed_pct", "avg_queries")
COLUMNS = {"model": "model", "synonyms": "synonyms", "tool": "tool", "clean_accuracy": "clean acc",
           "accuracy_under_attack": "acc under attack", "attack_success_rate": "success rate",
           "words_perturbed_pct": "% words", "avg_queries": "queries", "model_texts": "texts scored",
           "seconds_per_example": "s/example", "same_outcome": "same outcome", "speedup": "x faster"}
RATE_COLUMNS = {key: heading for key, heading in COLUMNS.items() if key not in ("synonyms", "same_outcome", "speedup")}
COMPARISON_COLUMNS = {"model": "model", "both_attacked": "attacked by both",
                      "difference": "success rate, rift - TextAttack", "agree": "within 2 se",
                      "same_outcome": "same outcome", "speedup": "x faster"}


def peer_results(folder: Path) -> Path:
    """The harness's results.json, written when its attack has finished."""
    return folder / "textattack" / "results.json"


def parity(checkpoints: list[str] | None, peer: Path, examples: int, root: Path, results_dir: Path,
           data_dir: str | None, attack: str = "pwws") -> dict:
    """TextAttack 0.3.11's `attack` and rift's on the same `examples` sentences of each train.py run
    of `checkpoints`, one after the other in this process, so that the speed ratio holds on one
    machine at one time. Finished runs are not repeated."""
    if not (peer / "run.sh").is_file():
        raise UsageError(f"no TextAttack harness at {peer}: pass --peer (the folder of run.sh; run its setup.sh once)")
    if not checkpoints:
        raise UsageError("parity needs --checkpoints: two or more train.py runs on SST-2")
    for run in map(Path, checkpoints):
        if not (run / "config.json").is_file() or not (run / "best").is_dir():
            raise UsageError(f"{run} is not a train.py run folder (config.json and best/)")
    root.mkdir(parents=True, exist_ok=True)
    sentences = root / "sentences.tsv"  # drawn as evaluate.py draws: at least 4 words
    test = load_split(TASKS["sst2"], "test", data_dir)
    drawn = [test[i] for i in attacks.sample_examples(test, examples, SEED)]
    sentences.write_text("sentence\tlabel\n" + "".join(f"{ex.text}\t{ex.label}\n" for ex in drawn))
    rows, comparisons = [], []
    for checkpoint in checkpoints:
        run = Path(checkpoint)
        max_length = run_config(run)["resolved"]["max_length"]
        for source in VARIANTS[attack]:
            folder = root / f"{run.name}-{source}"
            if not peer_results(folder).is_file():
                command = [sys.executable, str(PEER_CALL), "--peer", str(peer), "--model", str(run / "best"),
                           "--file", str(sentences), "--n", str(len(drawn)), "--max-length", str(max_length),
                           *peer_flags(attack, source, data_dir), "--out", str(folder / "textattack")]
                print("+ " + " ".join(command), flush=True)
                if subprocess.run(command).returncode != 0:
                    raise UsageError(f"the TextAttack harness failed on {run} ({source}); its error is above")
            rift_flags = ["--synonyms", source] if attack == "pwws" else []
            run_cli(["evaluate.py", "--checkpoint", str(run), "--file", str(sentences), "--num-examples",
                     str(len(drawn)), "--min-words", "0", "--attack", attack, *rift_flags,
                     "--out", str(folder / "rift"), *data_flags(data_dir)], folder / "rift")
            if attack == "pwws":
                rows += parity_rows(run.name, source, folder)
            else:
                model_rows, comparison = deepwordbug_rows(run.name, folder)
                rows += model_rows
                comparisons.append(comparison)
    document = write_document(results_dir, PAGES[attack], {
        "attack": attack, "sentences": str(sentences), "examples": len(drawn), "checkpoints": checkpoints,
        "rows": rows, "comparisons": comparisons, "environment": environment(pick_device("cpu"))})
    RENDERS[attack](document, results_dir)
    return document


def peer_flags(attack: str, source: str, data_dir: str | None) -> list[str]:
    """textattack_peer.py's flags for one of the attack's VARIANTS: the recipe, and PWWS's synonyms."""
    if attack != "pwws":
        return ["--recipe", attack]
    flags = ["--recipe", attack, "--synonyms", source]
    if source == "counterfitted":  # the table rift reads by default
        flags += ["--neighbours-json", synonyms.counterfitted_synonyms(None, data_dir)[1]["path"]]
    return flags


def reports(folder: Path, attack: str) -> tuple[dict, dict, dict]:
    """What each tool reported of one model's attack: TextAttack's results.json, rift's row of the
    attack and rift's whole results.json."""
    peer, report = json.loads(read_text(peer_results(folder))), evaluated(folder / "rift")
    return peer, next(row for row in report["metrics"] if row["attack"] == attack), report


def tool_rows(peer: dict, ours: dict) -> tuple[dict, dict]:
    """The page's rows of TextAttack's results.json and rift's row, in that order."""
    return ({"tool": "TextAttack 0.3.11", **{key: peer[key] for key in REPORTED},
             "model_texts": peer["real_model_texts_per_attacked_example"],
             "seconds_per_example": peer["seconds_per_example"]},
            {"tool": "rift", **{key: ours[key] for key in REPORTED}, "model_texts": ours["avg_model_calls"],
             "seconds_per_example": ours["seconds_per_example"]})


def example_results(folder: Path) -> tuple[dict[int, str], dict[int, str]]:
    """Each tool's outcome (successful, failed, skipped) per sentence, keyed by its row in the
    file: TextAttack's, then rift's."""
    theirs = {line["row"]: line["result"]
              for line in map(json.loads, read_text(folder / "textattack" / "adversarial.jsonl").splitlines())}
    return theirs, example_statuses(folder / "rift")


def same_outcome(theirs: dict[int, str], mine: dict[int, str]) -> float:
    return sum(theirs[n] == mine[n] for n in mine) / len(mine)


def parity_rows(model: str, source: str, folder: Path) -> list[dict]:
    """Both tools' rows for one model and synonym source, and how often their outcomes agree."""
    peer, ours = tool_rows(*reports(folder, "pwws")[:2])
    common = {"model": model, "synonyms": source}
    return [common | peer,
            common | ours | {"same_outcome": same_outcome(*example_results(folder)),
                             "speedup": peer["seconds_per_example"] / ours["seconds_per_example"]}]


def deepwordbug_rows(model: str, folder: Path) -> tuple[list[dict], dict]:
    """Both tools' rows for one model, each rate with its binomial standard error, and how they
    compare: the paired difference in success rate, the share of the same outcomes, the speed ratio."""
    peer_report, our_report, rift_results = reports(folder, "deepwordbug")
    peer, ours = tool_rows(peer_report, our_report)
    peer = rated(model, peer, peer_report["n_examples"], peer_report["successful"], peer_report["failed"],
                 peer_report["attack_args"]["random_seed"])
    ours = rated(model, ours, our_report["examples"], our_report["successful"], our_report["failed"],
                 rift_results["settings"]["seed"])
    theirs, mine = example_results(folder)
    return [peer, ours], {"model": model, **success_difference(theirs, mine),
                          "same_outcome": same_outcome(theirs, mine),
                          "speedup": peer["seconds_per_example"] / ours["seconds_per_example"]}


def rated(model: str, row: dict, examples: int, successful: int, failed: int, seed: int) -> dict:
    """A tool's row with its model, counts and seed, and the binomial standard errors of its accuracy
    under attack (over every example) and of its success rate (over the attacked ones, those
    classified right)."""
    attacked = successful + failed
    return {"model": model} | row | {
        "examples": examples, "attacked": attacked, "seed": seed,
        "accuracy_under_attack_se": binomial_se(row["accuracy_under_attack"], examples),
        "attack_success_rate_se": binomial_se(row["attack_success_rate"], attacked)}


def success_difference(theirs: dict[int, str], mine: dict[int, str]) -> dict:
    """rift's success rate minus TextAttack's, paired on the sentences both attacked (neither found
    them misclassified): the mean of the per-sentence differences of the success indicators, its
    standard error sd / sqrt(n), and whether it lies within two standard errors of zero."""
    both = [n for n in mine if "skipped" not in (mine[n], theirs[n])]
    if len(both) < 2:
        raise UsageError(f"{len(both)} sentence(s) attacked by both tools: a standard error needs two, "
                         "pass more --examples")
    differences = [int(mine[n] == "successful") - int(theirs[n] == "successful") for n in both]
    mean, se = statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))
    return {"both_attacked": len(both), "difference": mean, "difference_se": se, "agree": abs(mean) <= 2 * se}


def render_pwws(document: dict, folder: Path) -> None:
    table = format_table(document["rows"], COLUMNS)
    write_page(folder / f"{PAGES['pwws']}.md",
        "# Parity with TextAttack: rift's PWWS beside TextAttack 0.3.11's, example by example\n\n"
        "Does rift's default PWWS reach the same outcome as TextAttack's on the same models and sentences, and how\n"
        f"much faster is it? Made by `python experiments/parity.py --checkpoints {' '.join(document['checkpoints'])}`\n"
        f"(per-example outcomes in `{Path(document['sentences']).parent}/`).\n\n```\n{table}\n```\n")
    print(table)


def plus_minus(row: dict, key: str) -> str:
    return f"{row[key]:.3f} ± {row[f'{key}_se']:.3f}"


def render_deepwordbug(document: dict, folder: Path) -> None:
    rates = format_table([row | {key: plus_minus(row, key) for key in ("accuracy_under_attack", "attack_success_rate")}
                          for row in document["rows"]], RATE_COLUMNS)
    comparisons = document["comparisons"]
    verdicts = format_table([c | {"difference": signed_with_se(c, "difference"), "agree": "yes" if c["agree"] else "no"}
                             for c in comparisons], COMPARISON_COLUMNS)
    seeds = {row["tool"]: row["seed"] for row in document["rows"]}
    agreeing = sum(c["agree"] for c in comparisons)
    write_page(folder / f"{PAGES['deepwordbug']}.md",
        "# Parity with TextAttack: rift's DeepWordBug beside TextAttack 0.3.11's, rate against rate\n\n"
        "DeepWordBug's character edits are random, so the two tools' outcomes cannot match sentence by sentence:\n"
        "do their success rates agree within two standard errors on the same models and sentences, and how much\n"
        "faster is rift? Made by `python experiments/parity.py --attack deepwordbug --checkpoints "
        f"{' '.join(document['checkpoints'])}`\n(per-example outcomes in `{Path(document['sentences']).parent}/`).\n\n"
        f"The same {document['examples']} SST-2 test sentences for both tools. Accuracy under attack ± its binomial "
        "standard error over\nthe sentences, success rate ± its over the attacked ones (those classified right). "
        f"TextAttack's edits\ndrawn with seed {seeds['TextAttack 0.3.11']} (AttackArgs.random_seed, one stream for "
        f"all sentences), rift's with evaluate.py's --seed {seeds['rift']}\n(one stream per sentence).\n\n"
        f"```\n{rates}\n```\n\n"
        "The difference is paired: on each sentence both tools attacked, rift's success (1 or 0) minus TextAttack's;\n"
        "mean ± sd / sqrt(n). Within 2 se: the difference lies within two standard errors of zero.\n\n"
        f"```\n{verdicts}\n```\n\nThe success rates agree within two standard errors on {agreeing} of "
        f"{len(comparisons)} models.\n")
    print(rates, verdicts, sep="\n\n")


RENDERS = {"pwws": render_pwws, "deepwordbug": render_deepwordbug}


def parse_args(argv=None):
    p = parser(__doc__, runs="runs/parity", encoder=False)
    p.add_argument("--checkpoints", nargs="+", help="the train.py runs on SST-2 attacked by both tools")
    p.add_argument("--attack", choices=PAGES, default="pwws",
                   help="pwws: PWWS with both synonym sources, example by example -> results/parity-sst2.*; "
                        "deepwordbug: DeepWordBug, rate against rate -> results/parity-deepwordbug.* "
                        "(default: %(default)s)")
    p.add_argument("--examples", type=at_least(1), default=200,
                   help=f"SST-2 test sentences, drawn with seed {SEED} (default: %(default)s)")
    p.add_argument("--peer", type=Path, default=REPO.parent / "shared" / "peers" / "textattack",
                   help="the TextAttack harness folder: its run.sh, setup.sh and stubs/ "
                        "(default: ../shared/peers/textattack)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table_only:
        RENDERS[args.attack](read_document(args.results_dir, PAGES[args.attack]), args.results_dir)
        return
    parity(args.checkpoints, args.peer, args.examples, args.runs, args.results_dir, args.data_dir, args.attack)


if __name__ == "__main__":
    run_command(main)
