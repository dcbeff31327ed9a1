"""The critics alone: how fast can they learn the ideal S = T? -> results/critic-lr.*

    python experiments/critics.py               # train the critics at each learning rate, in-process
    python experiments/critics.py --table-only  # the page and figure from results/critic-lr.json

With S = T exactly the true I(S; T | Y) is as large as it gets, so the InfoNCE bound is limited only
by log B_y and by how far the critics have learned. Everything else as in train.py, whose defaults
the tau, the AdamW weight decay and the warm-up (then linear decay) are: the frontier's training
sentences, class-balanced batches, its number of steps.
"""

import math
import random
import statistics
import tempfile
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import draw, parser, read_document, smoke_model, today, write_document, write_page

import torch

from cli import SEED, format_table, run_command, save_figure
from data import TASKS, balanced_batches, load_split, tokenize
from rift import (TAU, WARMUP, WEIGHT_DECAY, Critics, conditional_info_nce, load_classifier, make_teacher,
                  teacher_features, warmup_linear_decay)

# "bound at step c": the mean over the `window` steps up to c; then the `last` steps.
CRITICS = dict(task="sst2", train_examples=4800, steps=150, batch_size=32, tau=TAU, weight_decay=WEIGHT_DECAY,
               warmup=WARMUP, seed=SEED, lrs=(2e-5, 5e-5, 1e-4, 3e-4, 1e-3, 3e-3), features=("mean", "cls"),
               checkpoints=(10, 25, 50), window=5, last=10)
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


def critics_study(model: str, data_dir: str | None, folder: Path, settings: dict) -> dict:
    """results/critic-lr.{json,md,png}: the bound over the steps for every learning rate and feature."""
    s = settings
    task = TASKS[s["task"]]
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
                         **{f"step_{c}": statistics.fmean(bounds[max(c - s["window"], 0):c]) for c in s["checkpoints"]},
                         "last_10": statistics.fmean(bounds[-s["last"]:]), "max": max(bounds),
                         "last_10_share": statistics.fmean(bounds[-s["last"]:]) / ceiling})
            print(f"{feature} lr {lr:g}: bound over the last {s['last']} steps {rows[-1]['last_10']:.3f} of {ceiling:.3f}")
    document = write_document(folder, "critic-lr", {"settings": s, "model": model, "date": today(), "log_B_y": ceiling,
                                                    "rows": rows, "bounds": curves})
    render(document, folder)
    return document


def render(document: dict, folder: Path) -> None:
    s, ceiling, rows = document["settings"], document["log_B_y"], document["rows"]
    columns = {"feature": "feature", "lr": "critic lr", **{f"step_{c}": f"bound at step {c}" for c in s["checkpoints"]},
               "last_10": f"last {s['last']} steps", "last_10_share": "of log B_y", "max": "max"}
    write_page(folder / "critic-lr.md",
        f"# The InfoNCE critics alone, on S = T: how fast do they learn?\n\n"
        f"Produced by `python experiments/critics.py` ({document['date']}). T = the frozen pre-trained "
        f"{document['model']}'s feature (mean of the token states, or h_[CLS]) of {s['train_examples']} SST-2 "
        f"training sentences (seed {s['seed']}, the frontier's); S = T exactly, so only the critics limit the bound. "
        f"rift.Critics and rift.conditional_info_nce as train.py uses them: class-balanced batches of "
        f"{s['batch_size'] // 2} + {s['batch_size'] // 2}, tau {s['tau']}, AdamW (weight decay {s['weight_decay']}), "
        f"{s['warmup']:.0%} warm-up then linear decay, {s['steps']} steps. \"bound at step c\": the mean of the "
        f"{s['window']} steps up to c; the ceiling is log B_y = log {s['batch_size'] // 2} = {ceiling:.3f} nats."
        f"\n\n```\n{format_table(rows, columns)}\n```\n")
    draw(plot_critics, document["bounds"], ceiling, folder / "critic-lr.png")
    print(format_table(rows, columns))


def plot_critics(plt, curves: dict, ceiling: float, path: Path) -> None:
    figure, ax = plt.subplots(figsize=(7, 4.5))
    rates = list(dict.fromkeys(name.split(" lr ")[1] for name in curves))  # a colour per rate, a line style per feature
    for name, bounds in curves.items():
        ax.plot(range(1, len(bounds) + 1), bounds, label=name, color=f"C{rates.index(name.split(' lr ')[1])}",
                linestyle="-" if name.startswith("mean") else "--")
    ax.axhline(ceiling, color="grey", linewidth=0.8)
    ax.set(xlabel="step", ylabel="InfoNCE bound on I(S;T|Y), nats", title="critics alone on S = T")
    ax.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    save_figure(figure, path)


def parse_args(argv=None):
    return parser(__doc__).parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table_only:
        render(read_document(args.results_dir, "critic-lr"), args.results_dir)
        return
    if not args.smoke:
        critics_study(args.model, args.data_dir, args.results_dir, CRITICS)
        return
    with tempfile.TemporaryDirectory() as scratch:
        critics_study(smoke_model(Path(scratch)), args.data_dir, args.results_dir, CRITICS_SMOKE)


if __name__ == "__main__":
    run_command(main)
