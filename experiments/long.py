"""SST-2 at five times the pilot's budget: adv against rift -> results/sst2-long.*

    python experiments/long.py               # train, attack and tabulate what has not finished
    python experiments/long.py --table-only  # the page and figure from results/sst2-long.json

750 steps on the pilot's 4,800 sentences (five epochs): adv and rift with both of the pilot's fixes
at the paper's beta, one seed; a second seed where a gap exceeds two standard errors.
"""

from dataclasses import replace

# study first: it puts the repository root, and so the core, on sys.path
from study import SMOKE_TRAIN, Run, Study, with_flags

from cli import SEED, run_command
from paired import paired_command
from pilot import PILOT

LONG = Study(
    name="sst2-long", command="experiments/long.py", title="SST-2 at five times the budget: adv against rift",
    design="As the pilot (results/sst2-pilot.md), but {max_steps} steps ({epochs:.2g} epochs of the "
           "{max_train_examples:,} sentences), robust selection at steps {selection_steps}.",
    train=with_flags(PILOT.train, max_steps=750, eval_every=150),
    runs=(Run("rift", "rift", SEED, ("--alpha", "0.1"), against="adv"), Run("adv", "adv", SEED)),
    evaluations=PILOT.evaluations,
)
LONG = replace(LONG, smoke=PILOT.smoke | {"train": LONG.train + SMOKE_TRAIN})


parse_args, main = paired_command(LONG, __doc__, runs="runs/long")


if __name__ == "__main__":
    run_command(main)
