"""The demo (`make demo`): standard fine-tuning and RIFT on the same short budget, both attacked
by PWWS on the same test sentences, side by side.

    python experiments/demo.py           # the offline default task and model, into runs/demo
    python experiments/demo.py --smoke   # a tiny random model, a few steps: seconds

Like every study it skips what has finished, so a second run only prints the table. A short run
is a smoke run: what RIFT does at longer budgets, and against adversarial training, is in
results/README.md.
"""

import argparse
import json
import textwrap
from dataclasses import replace
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import SMOKE_TRAIN, Run, Study, attacked_on, paired_gaps, run_one, smoke_model, trained

from cli import SEED, run_command
from data import DEFAULT_TASK, TASKS
from paired import paired_rows
from rift import DEFAULT_MODEL

STEPS, TRAIN_EXAMPLES, ATTACKED = 50, 2000, 100
DEMO = Study(
    name="demo", command="experiments/demo.py",
    # One dev evaluation at the end and the last step kept: no selection attack, which would cost
    # RIFT's run more than the standard one.
    train=("--max-train-examples", str(TRAIN_EXAMPLES), "--max-steps", str(STEPS), "--eval-every", str(STEPS),
           "--select-on", "last"),
    runs=(Run("standard", "standard", SEED), Run("rift", "rift", SEED, against="standard")),
    evaluations=attacked_on({"pwws": ATTACKED}), cka_features=("mean",), cka_examples=500,
)
DEMO = replace(DEMO, smoke=dict(train=DEMO.train + SMOKE_TRAIN, evaluations=attacked_on({"pwws": 4}), cka_examples=16))


def side_by_side(rows: list[dict], gap: dict) -> str:
    """The two runs in columns, each quantity a line, in percent where it is a share."""
    standard, rift = rows

    def percent(row, key):
        return f"{100 * row[key]:.1f}"
    lines = [("", "standard", "rift", "rift - standard"),
             ("clean accuracy (%)", percent(standard, "clean_accuracy"), percent(rift, "clean_accuracy"),
              f"{100 * gap['clean']:+.1f} ± {100 * gap['clean_se']:.1f}"),
             ("accuracy under PWWS (%)", percent(standard, "pwws_accuracy"), percent(rift, "pwws_accuracy"),
              f"{100 * gap['pwws']:+.1f} ± {100 * gap['pwws_se']:.1f}"),
             ("CKA with the pre-trained model", f"{standard['cka_mean']:.2f}", f"{rift['cka_mean']:.2f}", ""),
             ("MI bound (nats)", "-", f"{rift['last_mi_bound']:.2f} of {rift['mi_bound_ceiling']:.2f}", ""),
             ("training minutes", f"{standard['train_minutes']:.1f}", f"{rift['train_minutes']:.1f}", "")]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def verdict(rows: list[dict], gap: dict) -> str:
    """Two plain sentences from the numbers: what changed, and what a short run can say."""
    standard, rift = rows
    d, se, n = 100 * gap["pwws"], 100 * gap["pwws_se"], rift["pwws_examples"]
    robust = (f"under PWWS the two are level: {d:+.1f} ± {se:.1f} points on the same {n} sentences, within two "
              "standard errors" if abs(d) <= 2 * se else
              f"under PWWS RIFT is {abs(d):.1f} ± {se:.1f} points {'more' if d > 0 else 'less'} accurate on the same "
              f"{n} sentences")
    changed = (f"What changed: the linear CKA of RIFT's mean-pooled features with the pre-trained model's is "
               f"{rift['cka_mean']:.2f}, standard fine-tuning's {standard['cka_mean']:.2f} (1 = the same features up "
               f"to rotation and scale); {robust}.")
    smoke = (f"This is a smoke run of {rift['steps']} steps: the studies train longer, attack 500 sentences with "
             "several attacks and compare RIFT with adversarial training (results/README.md).")
    return "\n".join(textwrap.fill(sentence, 100) for sentence in (changed, smoke))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default=DEFAULT_TASK, choices=TASKS, help="the task (default: %(default)s)")
    p.add_argument("--data-dir", help="folder holding the data sets (else $RIFT_DATA, else the cache)")
    p.add_argument("--runs", type=Path, default=Path("runs/demo"), help="the run folders (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="a tiny random model, a few steps and examples (seconds)")
    args = p.parse_args(argv)
    study = replace(DEMO, **DEMO.smoke) if args.smoke else DEMO
    study = replace(study, train=("--task", args.task, *study.train))
    model = smoke_model(args.runs) if args.smoke else args.model
    for run in study.runs:
        run_one(study, run, model, args.data_dir, args.runs, train_file=[])
    rows = paired_rows(study, args.runs)
    for row in rows:
        row |= {key: trained(args.runs / row["name"]).get(key) for key in ("steps", "mi_bound_ceiling")}
    [gap] = paired_gaps(args.runs, rows, study.evaluations)
    text = side_by_side(rows, gap) + "\n\n" + verdict(rows, gap)
    (args.runs / "demo.json").write_text(json.dumps({"rows": rows, "paired_difference": gap, "verdict": text}, indent=2))
    print("\n" + text)


if __name__ == "__main__":
    run_command(main)
