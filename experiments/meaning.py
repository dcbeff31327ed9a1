"""How close do PWWS's successes stay to their originals? -> results/meaning-sst2.*

    python experiments/meaning.py                # the similarity of every success of the evaluations below
    python experiments/meaning.py --table-only   # the page and figure from results/meaning-sst2.json

Reads the adversarial texts the SST-2 long study kept (results/sst2-long/<run>/eval/<attack>/
adversarial.jsonl: adv and rift after 750 steps, PWWS with WordNet and with the counter-fitted
table on the same 500 test sentences) and measures each success as evaluate.py records it:
the cosine of the frozen pre-trained all-MiniLM-L6-v2's embeddings of the whole perturbed text
and the original (similarity.success_records). No attack runs here.
"""

import json
from pathlib import Path

import numpy as np

# study first: it puts the repository root, and so the core, on sys.path
from study import REPO, draw, parser, read_document, today, write_document, write_page

import similarity
from cli import format_table, pick_device, run_command, save_figure
from data import UsageError, read_text

EVALUATIONS = {f"{run} {attack}": Path("results/sst2-long") / run / "eval" / folder
               for run in ("adv", "rift")
               for attack, folder in (("pwws/wordnet", "pwws"), ("pwws/counterfitted", "pwws_counterfitted"))}
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
THRESHOLDS = (0.7, 0.8, 0.840845057, 0.9)  # TextFooler's and TextDefender's (for USE, angular) among them


def measure(folders: dict[str, Path]) -> dict:
    encoder = similarity.SentenceEncoder(pick_device("auto"), batch_size=64)
    measured = {}
    for name, folder in folders.items():
        path = REPO / folder / "adversarial.jsonl"
        if not path.is_file():
            raise UsageError(f"{path} is missing: the SST-2 long study's records (python experiments/long.py) keep it")
        lines = [json.loads(line) | {"attack": "pwws"} for line in read_text(path).splitlines()]
        records = similarity.success_records(lines, encoder, ["pwws"])
        measured[name] = [r["similarity"] for r in records if r["similarity"] is not None]
    return {"date": today(), "sentence_model": encoder.path, "evaluations": {k: str(v) for k, v in folders.items()},
            "similarities": measured}


def render(document: dict, folder: Path) -> None:
    rows = []
    for name, values in document["similarities"].items():
        s = np.array(values)
        rows.append({"evaluation": name, "successes": len(s), "mean": round(float(s.mean()), 3),
                     **{f"q{q:g}": round(float(np.quantile(s, q)), 3) for q in QUANTILES},
                     **{f"below {t:.3g}": f"{(s < t).mean():.0%}" for t in THRESHOLDS}})
    columns = {"evaluation": "model attack", "successes": "successes", "mean": "mean",
               **{f"q{q:g}": f"{q:.0%}" for q in QUANTILES}, **{f"below {t:.3g}": f"< {t:.3g}" for t in THRESHOLDS}}
    write_page(folder / "meaning-sst2.md",
        "# How close PWWS's successes stay to their originals, by MiniLM\n\n"
        f"Produced by `python experiments/meaning.py` ({document['date']}). For each successful adversarial text "
        "of the SST-2 long study's models (750 steps; results/sst2-long.md), the cosine of the frozen pre-trained "
        "all-MiniLM-L6-v2's embeddings (its mean pooling) of the whole perturbed text and its original, as "
        "evaluate.py records it (`similarity` in adversarial.jsonl). Quantiles of that cosine, and the share of "
        "successes below each threshold: 0.841 is TextFooler's and TextDefender's, set for USE's angular "
        "similarity on a 15-word window, so it is shown for scale, not as their constraint.\n\n"
        f"```\n{format_table(rows, columns)}\n```\n\nThe distributions: meaning-sst2.png.\n")
    draw(plot_similarities, document["similarities"], folder / "meaning-sst2.png")
    print(format_table(rows, columns))


def plot_similarities(plt, similarities: dict, path: Path) -> None:
    figure, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(min(min(v) for v in similarities.values()), 1, 31)
    for name, values in similarities.items():
        ax.hist(values, bins=bins, histtype="step", label=f"{name} ({len(values)})")
    ax.axvline(similarity.TEXTFOOLER_THRESHOLD, color="grey", linewidth=0.8)
    ax.set(xlabel="MiniLM cosine, perturbed vs original (whole text)", ylabel="successes",
           title="PWWS's successes on SST-2")
    ax.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def main(argv=None) -> None:
    args = parser(__doc__, encoder=False).parse_args(argv)
    if not args.table_only:
        write_document(args.results_dir, "meaning-sst2", measure(EVALUATIONS))
    render(read_document(args.results_dir, "meaning-sst2"), args.results_dir)


if __name__ == "__main__":
    run_command(main)
