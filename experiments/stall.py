"""Why RIFT stalls (issue 27): each term's pull on the encoder logged (`--log-pulls`), and S on the
classifier's own path (`--feature pooler`, the tensor the head reads, as in the release) beside
today's S (`auto`: the mean pool for MiniLM).

    python experiments/stall.py snli   # SNLI at three times its study's budget -> results/stall-snli.*
    python experiments/stall.py sst2   # the two S choices at the SST-2 pilot's budget -> results/stall-sst2.*
    python experiments/stall.py sst2 --table-only   # the page and figure from results/stall-sst2.json

On SST-2 beside an adv trained again: the pilot's runs left no records to pair with.
"""

from dataclasses import replace
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import SMOKE_TRAIN, Run, parser, with_flags

from cli import SEED, run_command
from paired import run_paired
from pilot import PILOT
from snli import SNLI

PULLS = ("--log-pulls",)
STALL_SNLI = replace(
    SNLI, name="stall-snli", command="experiments/stall.py snli",
    title="Why RIFT stalls on SNLI: each term's pull, and S on the classifier's own path, at three times the budget",
    design=SNLI.design.replace(" (standard too)", "").replace(
        "`rift-ramp` raises alpha linearly from 0 over the first half of the run (`--alpha-ramp-steps`).",
        "`rift-pooler` takes S and T at the pooler, the tensor the classification head reads. Every run logs each "
        "term's pull on the encoder (`--log-pulls`) every 10 steps."),
    train=with_flags(SNLI.train, max_steps=624, eval_every=104),
    runs=(Run("rift", "rift", SEED, PULLS, against="adv"),
          Run("rift-pooler", "rift", SEED, (*PULLS, "--feature", "pooler"), against="rift"),
          Run("adv", "adv", SEED, PULLS)),
    evaluations={name: SNLI.evaluations[name] for name in ("pwws_counterfitted", "ascc")})
STALL_SNLI = replace(STALL_SNLI, smoke=dict(
    train=STALL_SNLI.train + SMOKE_TRAIN, cka_examples=16,
    evaluations={name: (flags, 4) for name, (flags, _) in STALL_SNLI.evaluations.items()}))
STALL_SST2 = replace(
    PILOT, name="stall-sst2", command="experiments/stall.py sst2",
    title="Why RIFT stalls on SST-2: S on the classifier's own path at the pilot's budget",
    design=PILOT.design.replace("`rift-cls` keeps the frontier's [CLS]", "`rift-pooler` takes S and T at the "
                                "pooler, the tensor the classification head reads; both rift runs log each term's "
                                "pull on the encoder (`--log-pulls`) every 10 steps"),
    runs=(Run("adv", "adv", SEED), Run("rift", "rift", SEED, ("--alpha", "0.1", *PULLS), against="adv"),
          Run("rift-pooler", "rift", SEED, ("--alpha", "0.1", "--feature", "pooler", *PULLS), against="rift")))
STALL_SST2 = replace(STALL_SST2, smoke=PILOT.smoke | {"runs": STALL_SST2.runs})
STALLS = {"snli": STALL_SNLI, "sst2": STALL_SST2}


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("task", choices=STALLS, help="which stall study: SNLI's or SST-2's")
    p.add_argument("--runs", type=Path, help="the run folders (default: runs/stall-TASK)")
    args = p.parse_args(argv)
    args.runs = args.runs or Path("runs") / f"stall-{args.task}"
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    run_paired(STALLS[args.task], args)


if __name__ == "__main__":
    run_command(main)
