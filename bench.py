"""What rift costs, measured on this machine (what rift achieves is measured by the studies under
experiments/).

    python bench.py                         # training-step ratios and attack time shares -> bench.json
    python bench.py --smoke                 # the same on a tiny random model in seconds (CI keeps it working)
    python bench.py cost --adversary ascc   # the same with the paper's adversary instead of PGD (`cost`,
                                            # the one command, may be left out)

Cost is measured as ratios inside one process on the same batches, so the machine's speed cancels:
  training  seconds per optimiser step of standard, adv and rift, each against standard, beside the
            ratio expected from counting passes (K attack steps of forward + backward to the
            embeddings, a second forward + backward for the adversarial input, one teacher forward),
            each pass timed alone. Goal: measured / expected <= 1.15 (no pass is wasted).
  attacks   PWWS on 200 examples, fp32 or bf16 search, one example at a time or 32 at once, in
            turns: examples/s, model calls/s, the share of wall time inside the model's forward passes
            (goal >= 85%: batching and caching work), outcomes that differ from fp32 one at a time;
            and PWWS's ranking queries on 50 IMDB reviews with and without the truncation window.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import attacking
import attacks
import synonyms
from adversaries import ADVERSARIES, ASCC_STEPS, PGD_EPS, PGD_STEPS
from cli import at_least, environment, format_table, newest_run, pick_device, run_command
from costs import tiny_classifier, tiny_model, training_cost
from data import TASKS, UsageError, load_split
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
            with attacking.Victim(model, tokenizer, max_length, batch_size, amp) as victim:
                started = time.perf_counter()
                done = attacking.attack_examples(victim, chunk, "pwws", word_synonyms, list(range(len(chunk))),
                                               at_once=at_once)
                way["results"] |= {start + n: result for n, result in done}
                way["wall"] += time.perf_counter() - started
                way["model"] += victim.model_seconds
    reference = ways[(False, 1)]["results"]
    rows = []
    for (amp, at_once), way in ways.items():
        results = [way["results"][n] for n in range(len(examples))]
        summary = attacking.summarize([r.record() for r in results])
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
        visible = attacking.visible_tokens(tokenizer, example, max_length)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`cost` may name the command: `python bench.py cost --smoke` is `python bench.py --smoke`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder holding the data sets (else $RIFT_DATA, else the cache)")
    p.add_argument("--smoke", action="store_true", help="a tiny random model, a few batches and examples (seconds)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="the encoder whose training steps are timed (default: %(default)s)")
    p.add_argument("--checkpoint", help="the fine-tuned model attacked (default: the newest run's best/)")
    p.add_argument("--batch-size", type=at_least(2), default=BATCH_SIZE,
                   help="training batch, even (default: %(default)s)")
    p.add_argument("--adversary", default="pgd", choices=ADVERSARIES,
                   help="the training adversary (default: %(default)s)")
    p.add_argument("--adv-steps", type=at_least(1), default=PGD_STEPS, help="PGD steps K (default: %(default)s)")
    p.add_argument("--ascc-steps", type=at_least(1), default=ASCC_STEPS, help="ASCC steps K (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="time the training steps under bf16 autocast")
    p.add_argument("--repeats", type=at_least(1), default=3,
                   help="timed passes over the 4 batches (default: %(default)s)")
    p.add_argument("--attack-examples", type=at_least(1), default=200, help="PWWS examples (default: %(default)s)")
    p.add_argument("--json", default="bench.json", help="where the numbers go (default: %(default)s)")
    return p.parse_args(argv[1:] if argv[:1] == ["cost"] else argv)


def main(argv=None) -> None:
    cost(parse_args(argv))


if __name__ == "__main__":
    run_command(main)
