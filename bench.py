"""What rift costs, measured on this machine; and the command line of the result tables of
experiments.py, studies.py and parity.py (what rift achieves). Each command has its own flags
(python bench.py COMMAND --help); with none, the command is cost.

    python bench.py                 # cost: training-step ratios and attack time shares -> bench.json
    python bench.py --smoke         # the same on a tiny random model in seconds (CI keeps it working)
    python bench.py cost --adversary ascc  # the same with the paper's adversary instead of PGD
    python bench.py results         # train standard/adv/rift on SST-2, attack each -> results/
    python bench.py frontier        # adv and rift (ASCC) at several beta, attacked, CKA -> results/
    python bench.py critics         # the InfoNCE critics alone on S = T, by learning rate -> results/critic-lr.*
    python bench.py pilot           # adv vs rift, critics that learn, robust selection -> results/sst2-pilot.*
    python bench.py snli            # standard, adv and rift on SNLI, the paper's weights -> results/snli.*
    python bench.py long            # adv vs rift at five times the pilot's budget -> results/sst2-long.*
    python bench.py parity --checkpoints RUN RUN   # rift's PWWS beside TextAttack's -> results/parity-sst2.*
    python bench.py plot RUN_DIR    # a train.py run's loss terms, MI bound, dev accuracy -> RUN_DIR/training.png
    python bench.py gpu run check snli --out OUT   # on a GPU: the CUDA paths, then adv and rift on SNLI
    python bench.py gpu file OUT    # what a GPU step brought back -> results/gpu/ (gpu.py says more)

Cost is measured as ratios inside one process on the same batches, so the machine's speed cancels:
  training  seconds per optimiser step of standard, adv and rift, each against standard, beside the
            ratio expected from counting passes (K attack steps of forward + backward to the
            embeddings, a second forward + backward for the adversarial input, one teacher forward),
            each pass timed alone. Goal: measured / expected <= 1.15 (no pass is wasted).
  attacks   PWWS on 200 examples, fp32 or bf16 search, one example at a time or 32 at once, in
            turns: examples/s, model calls/s, the share of wall time inside the model's forward passes
            (goal >= 85%: batching and caching work), outcomes that differ from fp32 one at a time;
            and PWWS's ranking queries on 50 IMDB reviews with and without the truncation window.
  parity    (parity.py) TextAttack 0.3.11's PWWS (../shared/peers/textattack) and rift's on
            the same models and sentences, one after the other: success, accuracy under attack,
            % words, queries, s/example, and the share of examples with the same outcome. Goal:
            success rates within 2 points, >= 90% same outcome, rift's s/example <= 1/3 of TextAttack's.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import attacks
import gpu
import synonyms
from cli import at_least, environment, format_table, newest_run, pick_device, run_command
from costs import training_cost
from data import TASKS, UsageError, load_split
from experiments import frontier, plot_run, results
from parity import parity
from runner import tiny_classifier, tiny_model
from studies import STUDIES, critics_study, study_command
from adversaries import ADVERSARIES, ASCC_STEPS, PGD_EPS, PGD_STEPS
from rift import BATCH_SIZE, DEFAULT_MODEL, load_classifier, predict_proba


def attack_cost(checkpoint: str, examples, device, max_length: int, batch_size: int) -> list[dict]:
    """PWWS/WordNet on the same examples four ways: fp32 or bf16 search, one example at a time or
    32 at once, in turns, example block by block, so the machine's drift falls on all alike. Each
    row: examples/s, model calls/s, share of wall time in the model's forward passes, and how many
    outcomes differ from the fp32 one-at-a-time run."""
    model, tokenizer = load_classifier(checkpoint)
    model.to(device).eval()
    word_synonyms, _ = synonyms.wordnet_synonyms()
    predict_proba(model, tokenizer, examples, max_length, batch_size)  # warm-up
    started = time.perf_counter()
    predict_proba(model, tokenizer, examples, max_length, batch_size)
    forward_seconds = time.perf_counter() - started
    ways = {(amp, at_once): {"wall": 0.0, "model": 0.0, "results": {}} for amp in (False, True) for at_once in (1, 32)}
    block = 25
    for start in range(0, len(examples), block):
        chunk = examples[start:start + block]
        for (amp, at_once), way in ways.items():
            with attacks.Victim(model, tokenizer, max_length, batch_size, amp) as victim:
                started = time.perf_counter()
                done = attacks.attack_examples(victim, chunk, "pwws", word_synonyms, list(range(len(chunk))),
                                               at_once=at_once)
                way["results"] |= {start + n: result for n, result in done}
                way["wall"] += time.perf_counter() - started
                way["model"] += victim.model_seconds
    reference = ways[(False, 1)]["results"]
    rows = []
    for (amp, at_once), way in ways.items():
        results = [way["results"][n] for n in range(len(examples))]
        summary = attacks.summarize([r.record() for r in results])
        rows.append({"search": "bf16" if amp else "fp32", "examples_at_once": at_once,
                     "attack_examples_per_s": len(examples) / way["wall"],
                     "model_calls_per_s": sum(r.model_calls for r in results) / way["wall"],
                     "model_time_share": way["model"] / way["wall"], "avg_queries": summary["avg_queries"],
                     "success_rate": summary["attack_success_rate"],
                     "outcomes_differing": sum(r.status != reference[n].status for n, r in enumerate(results)),
                     "fp32_reruns": summary["fp32_reruns"], "recheck_mismatches": summary["recheck_mismatches"],
                     "forward_examples_per_s": len(examples) / forward_seconds})
    return rows


def window_savings(tokenizer, examples, max_length: int, word_synonyms) -> dict:
    """PWWS's ranking queries (the original, one [UNK] text per word that may change, one text per
    swap) on long texts, counting every word as TextAttack does and only the words inside the
    truncation window as attacks.py does. Exact without a model: the ranking scores every swap. The
    greedy phase saves more on top (TextAttack visits the hidden words too), uncounted here."""
    every = window = 0
    for example in examples:
        options = attacks.substitutions(example.words, word_synonyms)
        visible = attacks.visible_tokens(tokenizer, example, max_length)
        every += 1 + sum(1 + len(o) for o in options.values())
        window += 1 + sum(1 + len(o) for slot, o in options.items() if slot[0] < visible)
    return {"examples": len(examples), "max_length": max_length, "ranking_queries_every_word": every / len(examples),
            "ranking_queries_in_window": window / len(examples), "saved_share": 1 - window / every}


def cost(args) -> dict:
    device = pick_device("auto")
    torch.manual_seed(0)
    task = TASKS["sst2"]
    train = load_split(task, "train", args.data_dir)
    test_split = load_split(task, "test", args.data_dir)
    test = [test_split[i] for i in attacks.long_enough(test_split)]  # evaluate.py's default rule
    imdb = load_split(TASKS["imdb"], "test", args.data_dir)[:8 if args.smoke else 50]
    scratch = Path(tempfile.mkdtemp())
    try:
        model = tiny_model(scratch / "tiny") if args.smoke else args.model
        checkpoint = tiny_classifier(model, scratch / "tiny-classifier") if args.smoke else (
            args.checkpoint or newest_checkpoint())
        steps = args.ascc_steps if args.adversary == "ascc" else args.adv_steps
        neighbour_words = synonyms.counterfitted_synonyms(None, args.data_dir)[0] if args.adversary == "ascc" else None
        rows = training_cost(model, train[:2000], device, args.batch_size, steps, PGD_EPS, task.max_length,
                             1 if args.smoke else args.repeats, args.adversary, neighbour_words, args.amp)
        attack = attack_cost(checkpoint, test[:8 if args.smoke else args.attack_examples], device,
                             task.max_length, 32)
        window = window_savings(load_classifier(checkpoint)[1], imdb, TASKS["imdb"].max_length,
                                synonyms.wordnet_synonyms()[0])
    finally:
        shutil.rmtree(scratch)
    report = {"environment": environment(device), "smoke": args.smoke,
              "model": model if not args.smoke else "tiny random BERT", "batch_size": args.batch_size,
              "adversary": args.adversary, "adversary_steps": steps, "amp": args.amp, "training": rows, "attacks": attack,
              "imdb_window": window}
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\ntraining cost per optimiser step ({report['model']}, batch {args.batch_size}, {args.adversary} K={steps}, "
          f"{'bf16 autocast, ' if args.amp else ''}"
          f"{device}, {torch.get_num_threads()} threads; peak MB: the process's high-water mark, methods cheapest first)")
    print(format_table(rows[:-1], {"method": "method", "s_per_step": "s/step", "examples_per_s": "examples/s",
                                   "ratio_to_standard": "x standard", "expected_ratio": "expected x",
                                   "measured_over_expected": "measured/expected", "peak_memory_mb": "peak MB"}))
    print(f"\nattack cost: PWWS/WordNet on {len(test[:8 if args.smoke else args.attack_examples])} SST-2 test "
          f"examples ({checkpoint}); forward alone: {attack[0]['forward_examples_per_s']:.1f} examples/s")
    print(format_table(attack, {"search": "search", "examples_at_once": "at once",
                                "attack_examples_per_s": "examples/s", "model_calls_per_s": "model calls/s",
                                "model_time_share": "time in model", "avg_queries": "queries/example",
                                "success_rate": "success rate", "outcomes_differing": "outcomes != fp32 x1",
                                "fp32_reruns": "fp32 reruns"}))
    print(f"\ntruncation window: PWWS/WordNet ranking queries per IMDB test review at {window['max_length']} tokens: "
          f"{window['ranking_queries_every_word']:.0f} counting every word, {window['ranking_queries_in_window']:.0f} "
          f"inside the window ({100 * window['saved_share']:.1f}% saved, {window['examples']} reviews)")
    print(f"\n-> {args.json}")
    return report


def newest_checkpoint() -> str:
    run = newest_run()
    if run is None:
        raise UsageError("the attack benchmark needs a fine-tuned model: pass --checkpoint or train one first")
    return str(run / "best")


def build_parser() -> argparse.ArgumentParser:
    """One sub-command per table or figure, each with only its own flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)

    # The flags several commands share, each written once.
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", help="folder holding the data sets (else $RIFT_DATA, else the cache)")
    results_dir = argparse.ArgumentParser(add_help=False)
    results_dir.add_argument("--results-dir", type=Path, default=Path("results"),
                             help="where the tables and figures go (default: %(default)s)")
    table_only = argparse.ArgumentParser(add_help=False)
    table_only.add_argument("--table-only", action="store_true",
                            help="write the tables and figure from the runs that have finished; run nothing")
    encoder = argparse.ArgumentParser(add_help=False)
    encoder.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder (default: %(default)s)")
    encoder.add_argument("--smoke", action="store_true",
                         help="a tiny random model, a few steps and examples (seconds to minutes)")

    def runs(command: str) -> argparse.ArgumentParser:
        flag = argparse.ArgumentParser(add_help=False)
        flag.add_argument("--runs", type=Path, default=Path("runs") / command,
                          help="the run folders (default: %(default)s)")
        return flag

    def command(name: str, summary: str, *parents) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, parents=[*parents, data])

    timing = command("cost", "what training and attacks cost on this machine -> bench.json (the default command)")
    timing.add_argument("--smoke", action="store_true", help="a tiny random model, a few batches and examples (seconds)")
    timing.add_argument("--model", default=DEFAULT_MODEL,
                        help="the encoder whose training steps are timed (default: %(default)s)")
    timing.add_argument("--checkpoint", help="the fine-tuned model attacked (default: the newest run's best/)")
    timing.add_argument("--batch-size", type=at_least(2), default=BATCH_SIZE, help="training batch, even (default: %(default)s)")
    timing.add_argument("--adversary", default="pgd", choices=ADVERSARIES,
                        help="the training adversary (default: %(default)s)")
    timing.add_argument("--adv-steps", type=at_least(1), default=PGD_STEPS, help="PGD steps K (default: %(default)s)")
    timing.add_argument("--ascc-steps", type=at_least(1), default=ASCC_STEPS, help="ASCC steps K (default: %(default)s)")
    timing.add_argument("--amp", action="store_true", help="time the training steps under bf16 autocast")
    timing.add_argument("--repeats", type=at_least(1), default=3,
                        help="timed passes over the 4 batches (default: %(default)s)")
    timing.add_argument("--attack-examples", type=at_least(1), default=200, help="PWWS examples (default: %(default)s)")
    timing.add_argument("--json", default="bench.json", help="where the numbers go (default: %(default)s)")
    command("results", "standard / adv / rift (PGD) on SST-2, attacked -> results/sst2-minilm.*",
            runs("results"), results_dir, table_only)
    command("frontier", "adv and rift (ASCC) at several beta, attacked, CKA -> results/sst2-frontier.*",
            runs("frontier"), results_dir, table_only, encoder)
    command("critics", "the InfoNCE critics alone on S = T, by learning rate -> results/critic-lr.*",
            results_dir, encoder)
    for name in STUDIES:
        command(name, f"{STUDIES[name].title} -> results/{STUDIES[name].name}.*",
                runs(name), results_dir, table_only, encoder)
    peers = command("parity", "rift's PWWS beside TextAttack's on the same models -> results/parity-sst2.*",
                     runs("parity"), results_dir)
    peers.add_argument("--checkpoints", nargs="+", help="the train.py runs on SST-2 attacked by both tools")
    peers.add_argument("--examples", type=at_least(1), default=200,
                        help="SST-2 test sentences, drawn with seed 42 (default: %(default)s)")
    peers.add_argument("--peer", type=Path, default=Path(__file__).resolve().parent.parent / "shared" / "peers" /
                        "textattack", help="the TextAttack harness folder (default: ../shared/peers/textattack)")
    steps = commands.add_parser("gpu", help="rift on a GPU: the bundle, the steps, and filing what they bring back",
                                description=gpu.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = steps.add_subparsers(dest="action", required=True)
    bundle = actions.add_parser("bundle", help="gpu/: the model (fp16) and the steps' data (xz) that travel",
                                parents=[data])
    bundle.add_argument("--steps", nargs="+", choices=gpu.STEPS, default=list(gpu.STEPS),
                        help="the steps whose data to bundle (default: all of them)")
    bundle.add_argument("--folder", type=Path, default=Path("gpu"), help="(default: %(default)s)")
    bundle.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder (default: %(default)s)")
    runner = actions.add_parser("run", help="steps on the GPU machine (check first: the others use its speeds)",
                                parents=[data])
    runner.add_argument("steps", nargs="+", choices=gpu.STEPS, help="the steps, in one command")
    runner.add_argument("--out", type=Path, required=True, help="where the reports, records and checkpoint go ($OUT)")
    runner.add_argument("--bundle", type=Path, help="the bundle to run from (make gpu-bundle); without it, --model "
                                                    "and the data folders as everywhere")
    runner.add_argument("--model", default=DEFAULT_MODEL, help="the pre-trained encoder without --bundle "
                                                               "(default: %(default)s)")
    runner.add_argument("--deadline-s", type=at_least(1.0, float),
                        help="seconds the whole command may take: a study then trains as many of its steps as fit, "
                             "from check's speeds (default: no limit, every step)")
    runner.add_argument("--smoke", action="store_true", help="a tiny random model, a few steps and examples")
    filing = actions.add_parser("file", help="a step's returned folder -> results/gpu/<step>.* (and runs/gpu/<step>/)")
    filing.add_argument("returned", type=Path, help="the folder the step wrote to")
    filing.add_argument("--results-dir", type=Path, default=Path("results"), help="(default: %(default)s)")
    filing.add_argument("--runs", type=Path, default=Path("runs"), help="(default: %(default)s)")
    join = actions.add_parser("join", help="the checkpoint parts a step brought back -> a Hugging Face folder")
    join.add_argument("returned", type=Path, help="the folder the step wrote to")
    join.add_argument("target", type=Path, help="the model folder to write (must not exist)")
    recheck = actions.add_parser("recheck", help="a joined checkpoint scores its run's attacked texts again here")
    recheck.add_argument("model", type=Path, help="the model folder `join` wrote")
    recheck.add_argument("run", type=Path, help="the run's records (runs/gpu/<step>/<run>, which `file` unpacked)")
    plot = commands.add_parser("plot", help="a train.py run's loss terms, MI bound and dev accuracy -> RUN/training.png",
                               description="a train.py run's loss terms, MI bound and dev accuracy -> RUN/training.png")
    plot.add_argument("run", type=Path, help="the run folder")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """No command means cost, and flags before any command are cost's (`python bench.py --smoke`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["cost", *argv]
    return build_parser().parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "cost":
        cost(args)
    elif args.command == "results":
        results(args.runs, args.results_dir, args.data_dir, args.table_only)
    elif args.command == "frontier":
        frontier(args.runs, args.results_dir, args.data_dir, args.model, args.smoke, args.table_only)
    elif args.command == "critics":
        critics_study(args.model, args.data_dir, args.results_dir, args.smoke)
    elif args.command in STUDIES:
        study_command(args.command, args.model, args.data_dir, args.runs, args.results_dir, args.smoke, args.table_only)
    elif args.command == "parity":
        parity(args.checkpoints, args.peer, args.examples, args.runs, args.results_dir, args.data_dir)
    elif args.command == "gpu":
        gpu_command(args)
    else:
        plot_run(args.run)


def gpu_command(args) -> None:
    if args.action == "bundle":
        gpu.make_bundle(args.folder, tuple(args.steps), args.model, args.data_dir)
    elif args.action == "file":
        gpu.file_steps(args.returned, args.results_dir, args.runs)
    elif args.action == "join":
        gpu.join_checkpoint(args.returned, args.target)
    elif args.action == "recheck":
        gpu.recheck(args.model, args.run)
    else:
        gpu.run_steps(args.steps, args.out, args.bundle, args.model, args.data_dir, args.smoke, args.deadline_s)


if __name__ == "__main__":
    run_command(main)
