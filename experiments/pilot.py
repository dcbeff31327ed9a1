"""The SST-2 pilot: adv against rift once RIFT's own term can work -> results/sst2-pilot.*

    python experiments/pilot.py               # train, attack and tabulate what has not finished
    python experiments/pilot.py --table-only  # the page and figure from results/sst2-pilot.json

Why. The frontier (results/sst2-frontier.md) trained the critics at the encoder's learning rate for
150 steps, where they barely learn: until they do, the MI term pushes S to fit two random maps. It
took S and T at [CLS], which all-MiniLM-L6-v2 never trained as a sentence feature. And it kept the
checkpoint with the best clean dev accuracy, which picks models before the adversary has acted. The
pilot changes these three things and nothing else: rift with both fixes (the critics' own learning
rate and the model's own feature, the mean pool for MiniLM), rift with the critics' learning rate
alone (features at [CLS], as the frontier), and adv, with two seeds; then both fixes at alpha 0.3
and 1.0. One robust selection rule for all, every run paired with adv on the same test sentences.
"""

from dataclasses import replace

# study first: it puts the repository root, and so the core, on sys.path
from study import OTHER_SEED, SMOKE_TRAIN, Run, Study, attacked_on, smoke_evaluations

from cli import SEED, run_command
from paired import paired_command
from rift import BETA

PILOT = Study(
    name="sst2-pilot", command="experiments/pilot.py",
    title="SST-2 pilot: adv against rift when RIFT's term gets to work",
    design="Every run: {max_train_examples:,} SST-2 training sentences drawn with the run's seed (as the frontier), "
           "{max_steps} steps of {batch_size}, lr {lr}, beta {beta} (the paper's), ASCC as the training adversary; "
           "best/ is the checkpoint with the best accuracy under ASCC on the same {select_examples} dev sentences at "
           "steps {selection_steps} (`--select-on robust`). rift trains its critics at their own learning rate "
           "(`--critic-lr` {critic_lr}, results/critic-lr.md); `S, T` is the feature RIFT's term sees (`--feature "
           "auto`: the mean pool for a sentence-transformers model such as all-MiniLM-L6-v2; `rift-cls` keeps the "
           "frontier's [CLS]).",
    train=("--task", "sst2", "--adversary", "ascc", "--beta", f"{BETA:g}", "--select-on", "robust",
           "--max-train-examples", "4800", "--max-steps", "150", "--batch-size", "32", "--lr", "5e-5",
           "--eval-every", "50", "--save-every", "25"),
    runs=(Run("adv", "adv", SEED),
          Run("rift", "rift", SEED, ("--alpha", "0.1"), against="adv"),
          Run("rift-cls", "rift", SEED, ("--alpha", "0.1", "--feature", "cls"), against="adv"),
          Run(f"adv-seed{OTHER_SEED}", "adv", OTHER_SEED),
          Run(f"rift-seed{OTHER_SEED}", "rift", OTHER_SEED, ("--alpha", "0.1"), against=f"adv-seed{OTHER_SEED}"),
          Run(f"rift-cls-seed{OTHER_SEED}", "rift", OTHER_SEED, ("--alpha", "0.1", "--feature", "cls"),
              against=f"adv-seed{OTHER_SEED}"),
          Run("rift-alpha0.3", "rift", SEED, ("--alpha", "0.3"), against="adv"),
          Run("rift-alpha1", "rift", SEED, ("--alpha", "1.0"), against="adv")),
    evaluations=attacked_on({"pwws": 500, "pwws_counterfitted": 500, "ascc": 500}),
)
PILOT = replace(PILOT, smoke=dict(train=PILOT.train + SMOKE_TRAIN, runs=PILOT.runs[:2], cka_examples=16,
                                  evaluations=smoke_evaluations(PILOT.evaluations)))


parse_args, main = paired_command(PILOT, __doc__, runs="runs/pilot")


if __name__ == "__main__":
    run_command(main)
