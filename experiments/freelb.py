"""FreeLB beside adv and rift at the SST-2 pilot's budget -> results/sst2-freelb.*

    python experiments/freelb.py               # train, attack and tabulate what has not finished
    python experiments/freelb.py --table-only  # the page and figure from results/sst2-freelb.json

FreeLB (Zhu et al., ICLR 2020) is the defence baseline papers compare against. Here it trains with
the pilot's flags (results/sst2-pilot.md) and its own defaults (train.py --help: the FreeLB
release's SST-2 line), beside adv and rift trained again with the same flags: the pilot kept no
per-example records to pair with. All three are selected alike, on ASCC's accuracy on the same dev
sentences, and attacked on the same test sentences; the worst case joins the three attacks.
"""

from dataclasses import replace

# study first: it puts the repository root, and so the core, on sys.path
from study import Run, Study, attacked_on

from cli import SEED, run_command
from paired import paired_command
from pilot import PILOT

FREELB = Study(
    name="sst2-freelb", command="experiments/freelb.py",
    title="FreeLB beside adv and rift at the SST-2 pilot's budget",
    design=PILOT.design.replace("rift trains its critics", "`freelb` is FreeLB with train.py's defaults (its "
                                "ascent steps do not use ASCC; ASCC only selects its checkpoint). rift trains its "
                                "critics").replace("; `rift-cls` keeps the frontier's [CLS]", ""),
    train=PILOT.train,
    runs=(Run("adv", "adv", SEED),
          Run("rift", "rift", SEED, ("--alpha", "0.1"), against="adv"),
          Run("freelb", "freelb", SEED, against="adv")),
    evaluations=attacked_on({"pwws": 500, "pwws_counterfitted": 500, "ascc": 500}))
FREELB = replace(FREELB, smoke=PILOT.smoke | {"runs": FREELB.runs})

parse_args, main = paired_command(FREELB, __doc__, runs="runs/sst2-freelb")

if __name__ == "__main__":
    run_command(main)
