"""The paper's second task: standard, adv and rift on SNLI with the paper's weights -> results/snli.*

    python experiments/snli.py               # train, attack and tabulate what has not finished
    python experiments/snli.py --table-only  # the page and figure from results/snli.json

SNLI's hypotheses are short, so its attacks are cheap. The paper's alpha 0.7 and beta 5; batches of
3 classes x 16; ASCC attacks the hypothesis only (the premise is the context); one epoch of 10,000
of the 20,000 shared training pairs. Robust training starts slowly here and a strong MI term can hold
CE at chance: the page shows each run's CE in its first and last window, and rift-ramp raises alpha
linearly over the first half of the run (train.py --alpha-ramp-steps), compared with rift. rift runs
first in each seed: its CE curve is the earliest sign of whether the ramp is needed.
"""

from dataclasses import replace

# study first: it puts the repository root, and so the core, on sys.path
from study import OTHER_SEED, SMOKE_TRAIN, Run, Study, attacked_on, smoke_evaluations

from cli import SEED, run_command
from paired import paired_command

SNLI = Study(
    name="snli", command="experiments/snli.py", title="SNLI: standard, adv and rift with the paper's weights",
    design="Every run: {max_train_examples:,} pairs drawn with the run's seed from the shared 20,000-pair SNLI train "
           "subset (a public copy whose labels were mapped by inspection: CPU-sized runs only), {model}, max length "
           "{max_length}, {max_steps} steps of {batch_size} (epochs: {epochs:.2g}), lr {lr}, alpha {alpha} and beta "
           "{beta} (the paper's), ASCC as the training adversary (the hypothesis only), best/ the checkpoint with the "
           "best accuracy under ASCC on the same {select_examples} dev pairs at steps {selection_steps} (standard "
           "too). rift: critics at {critic_lr}, features `auto` (the table's `S, T`); `rift-ramp` raises alpha linearly "
           "from 0 over the first half of the run (`--alpha-ramp-steps`).",
    train=("--task", "snli", "--adversary", "ascc", "--alpha", "0.7", "--beta", "5", "--select-on", "robust",
           "--max-train-examples", "10000", "--max-steps", "208", "--batch-size", "48", "--lr", "5e-5",
           "--eval-every", "52", "--save-every", "26"),
    runs=(Run("rift", "rift", SEED, against="adv"),
          Run("adv", "adv", SEED, against="standard"),
          Run("rift-ramp", "rift", SEED, ("--alpha-ramp-steps", "104"), against="rift"),
          Run("standard", "standard", SEED),
          Run(f"rift-seed{OTHER_SEED}", "rift", OTHER_SEED, against=f"adv-seed{OTHER_SEED}"),
          Run(f"adv-seed{OTHER_SEED}", "adv", OTHER_SEED, against=f"standard-seed{OTHER_SEED}"),
          Run(f"standard-seed{OTHER_SEED}", "standard", OTHER_SEED)),
    evaluations=attacked_on({"pwws_counterfitted": 500, "ascc": 500, "genetic": 200}),
    cka_examples=1000, train_file="snli/train_subset.tsv",
)
SNLI = replace(SNLI, smoke=dict(
    train=SNLI.train + SMOKE_TRAIN, runs=SNLI.runs[:4], cka_examples=16,
    evaluations=smoke_evaluations(SNLI.evaluations)))


parse_args, main = paired_command(SNLI, __doc__, runs="runs/snli")


if __name__ == "__main__":
    run_command(main)
