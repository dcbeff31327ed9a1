"""A train.py run's training curves: its loss terms, the InfoNCE bound on I(S;T|Y), its dev
accuracy, and each term's pull on the encoder where the run logged them (--log-pulls).

    python experiments/curves.py runs/RUN   # -> runs/RUN/training.png
"""

import argparse
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import training_log

from cli import pyplot, run_command, save_figure
from data import UsageError


def plot_run(run: Path) -> None:
    plt = pyplot()
    records = training_log(run)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "dev_accuracy" in r]
    if not steps:
        raise UsageError(f"{run} has no logged steps in a metrics.jsonl: is it a train.py run folder?")
    pulled = [r for r in steps if "pull_ce" in r]
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the train.py run folder")
    return p.parse_args(argv)


def main(argv=None) -> None:
    plot_run(parse_args(argv).run)


if __name__ == "__main__":
    run_command(main)
