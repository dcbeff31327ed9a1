"""Measure how robust a classifier is to word-substitution attacks and to embedding-space PGD.

    python evaluate.py --attack synonym                        # newest run in runs/: PWWS, WordNet
    python evaluate.py --resume runs/RUN/eval/pwws-wordnet-TIME  # finish an interrupted evaluation
    python evaluate.py --checkpoint runs/sst2-rift-20261125-120000 --attack all --synonyms counterfitted
    python evaluate.py --checkpoint path/to/any/hf/classifier --task sst2 --attack textfooler
    python evaluate.py --attack pgd --eps 0.01 0.02 0.05 0.1   # a robustness curve in one run
    python evaluate.py --protocol paper                        # the paper's: PWWS and genetic, counter-fitted
    python evaluate.py --protocol textdefender --attack pwws   # TextDefender's: 50x queries, 30% of the words
    python evaluate.py --attack textfooler --similarity 0.84   # candidates checked for meaning (MiniLM, not USE)
    python evaluate.py --attack ascc                           # the paper's third: ASCC, then the discrete text
    torchrun --nproc-per-node 4 evaluate.py --attack all       # the examples shared out among 4 processes

The word attacks follow TextAttack 0.3.11 by default (PWWS: no cap on the words changed, no query
budget, NLTK's stopwords, every WordNet sense); README's parity table measures how closely. The
examples are --num-examples drawn with --seed from --split (test by default), leaving out those of
fewer than --min-words words. --protocol textdefender sets TextDefender's benchmark. Writes, to --out or to
<run>/eval/<attack>-<synonyms>-<time>/:
    results.json       every setting, the sampled indices, the metrics of each attack ("complete"
                       false until the end: --resume OUT finishes the evaluation)
    adversarial.jsonl  one line per example and attack, written as it finishes and put in order at
                       the end (attack by attack, in the order of the indices): original and perturbed
                       text (PGD's is the original: it moves embeddings), changed words, label,
                       predictions and probabilities before and after; for a success of a text
                       attack, its similarity to the original (MiniLM's cosine) and share of changed
                       words (their means over the successes: results.json's mean_similarity and
                       words_perturbed_pct)
                       (under torchrun each process writes its own adversarial.rank<R>.jsonl, and
                       rank 0 merges them)
and prints the summary table in percent (clean accuracy, accuracy under attack, success rate, words
changed), with queries and seconds per example; results.json has the counts and timings besides.
"""

import argparse
import json
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import attacking
import eval_folder
import attacks
import similarity
import synonyms
from adversaries import ASCC, ASCC_STEPS, PGD, PGD_ATTACK_STEPS, PGD_NORM, neighbour_table
from checkpoints import writing
from cli import (add_data_flags, at_least, default_amp, environment, format_table, fraction, from_rank_zero, newest_run,
                 SEED, pick_device, process_group, pyplot, random_seed, run_command, save_figure)
from data import TASKS, UsageError, custom_task, file_sha256, infer_labels, load_split, read_text, split_file
from rift import load_classifier, predict_proba

ATTACKS = {"synonym": ["pwws"], "pwws": ["pwws"], "textfooler": ["textfooler"], "genetic": ["genetic"],
           "deepwordbug": ["deepwordbug"], "ascc": ["ascc"], "pgd": ["pgd"], "none": [],
           "all": ["pwws", "textfooler", "genetic", "deepwordbug", "pgd"], "paper": ["pwws", "genetic"]}
NO_SYNONYMS = ("deepwordbug", "ascc", "pgd")  # characters; the counter-fitted table whatever --synonyms; embeddings
# The paper's evaluation: PWWS and the genetic attack (population 60, 40
# iterations), both with the counter-fitted table, on 1,000 test examples. Only defaults: flags
# given explicitly win. The genetic attack's language-model constraint is not applied (no LM offline).
# TextDefender's (Li et al. 2021, its main.py and bundled TextAttack): at most 50 queries per word
# of the whole input (query_budget_size 50 x num_words), 30% of the words changed, 1,000 test
# examples whose first text (the premise for NLI) has more than 4 space-separated tokens, seed 42,
# the 50 nearest counter-fitted neighbours (WordSwapEmbedding max_candidates=50). TextDefender
# removes WordEmbeddingDistance for pwws and textfooler, so the neighbours keep no cosine floor
# (min_cos 0). Its Universal Sentence Encoder constraint on every attack (utils/textattack_utils.py:
# 0.840845057, angular, window 15, against the current text, shorter texts skipped) is applied with
# MiniLM in USE's place (similarity.py), a different encoder under the same numbers. Not applied
# offline: TextFooler's part-of-speech check. Its examples are drawn with numpy's np.random.choice,
# rift's with random.sample, so the 1,000 are not the same ones.
PROTOCOLS = {"paper": dict(attack="paper", synonyms="counterfitted", num_examples=1000, population=60,
                           generations=40, split="test"),
             "textdefender": dict(query_budget="50x", max_modify_rate=0.3, num_examples=1000, seed=42,
                                  synonyms="counterfitted-vectors", neighbours=50, min_cos=0.0,
                                  min_words=5, length_rule="textdefender", split="test",
                                  similarity=similarity.TEXTFOOLER_THRESHOLD, similarity_metric="angular",
                                  similarity_window=similarity.WINDOW, similarity_reference="current",
                                  similarity_skip_short=True)}
# Under torchrun a process that has attacked its share waits for the others, which may take hours longer.
PROCESS_TIMEOUT = timedelta(days=7)


def query_budget(value: str) -> int | str:
    """--query-budget N (texts) or Nx (N per word of the example, as attacking.example_budget counts)."""
    number = value.removesuffix("x")
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, or one followed by x (50x), "
                                         f"got {value!r}")
    return f"{int(number)}x" if value.endswith("x") else int(number)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a train.py run folder (or its best/) or a Hugging Face classifier folder "
                                        "(default: the newest run under runs/)")
    p.add_argument("--attack", default="synonym", choices=ATTACKS,
                   help="synonym (= pwws), pwws, textfooler, genetic, deepwordbug (character edits, no synonyms), "
                        "ascc (the paper's gradient attack over the counter-fitted neighbours, whatever --synonyms), "
                        "pgd, none (clean accuracy only), all (the word and character searches and pgd), or paper "
                        "(pwws and genetic) (default: %(default)s)")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="paper: the paper's evaluation, --attack paper --synonyms counterfitted --num-examples 1000 "
                        "--population 60 --generations 40 on the test split; textdefender: TextDefender's, "
                        "--query-budget 50x --max-modify-rate 0.3 --num-examples 1000 --seed 42 --synonyms "
                        "counterfitted-vectors --neighbours 50 --min-cos 0 --min-words 5 --length-rule textdefender "
                        f"--similarity {similarity.TEXTFOOLER_THRESHOLD} --similarity-metric angular, MiniLM in its "
                        "sentence encoder's place, without its POS check (flags given explicitly win)")
    data = p.add_argument_group("data")
    data.add_argument("--task", choices=[*TASKS, "custom"], help="the task (default: the run's; "
                                                                  "required for a plain model folder)")
    data.add_argument("--split", default="test", choices=["train", "dev", "test"],
                      help="the split the examples are drawn from (default: %(default)s)")
    data.add_argument("--file", help="a .tsv/.csv/.jsonl file to evaluate on instead of the task's split")
    add_data_flags(data, labels="the run's, else those of --file, sorted", max_length="the run's, else the task's",
                   run=", or the run's; given, it wins over the run's")
    data.add_argument("--num-examples", type=at_least(1), default=1000,
                      help="examples drawn with --seed (default: %(default)s)")
    data.add_argument("--min-words", type=at_least(0), default=attacks.MIN_WORDS,
                      help="leave out examples with fewer words (default: %(default)s)")
    data.add_argument("--length-rule", default="words", choices=attacks.LENGTH_RULES,
                      help="what --min-words counts: words, the attacked text's words as TextAttack counts them; "
                           "textdefender, the space-separated tokens of the first text (the premise of a pair), "
                           "as TextDefender's len(text_a.split(' ')) (default: %(default)s)")
    words = p.add_argument_group("word substitution (defaults: TextAttack 0.3.11's PWWS)")
    words.add_argument("--synonyms", default="wordnet", choices=["wordnet", "counterfitted", "counterfitted-vectors"],
                       help="WordNet 3.0; Jia et al.'s table of <= 8 counter-fitted neighbours; or the "
                            "--neighbours nearest words of the counter-fitted vectors (default: %(default)s)")
    words.add_argument("--wordnet-pos", default="all", choices=synonyms.WORDNET_POS,
                       help="all: every sense of the word, as TextAttack; usual: only its most frequent part "
                            "of speech, closer to the meaning (default: %(default)s)")
    words.add_argument("--stopwords", default="nltk", choices=list(synonyms.STOPWORDS),
                       help="words never changed: nltk, NLTK's 179 as TextAttack; extended, 319 function "
                            "words incl. even, never, well (default: %(default)s)")
    words.add_argument("--synonyms-path", help="the neighbour table (.json) or the vectors (.txt/.zip) to use")
    words.add_argument("--neighbours", type=at_least(1), default=synonyms.VECTOR_NEIGHBOURS,
                       help="counterfitted-vectors: nearest words kept (default: %(default)s, TextFooler's)")
    words.add_argument("--min-cos", type=fraction, default=synonyms.VECTOR_MIN_COS,
                       help="counterfitted-vectors: least cosine kept (default: %(default)s, TextFooler's)")
    words.add_argument("--max-modify-rate", type=fraction, default=1.0,
                       help="largest share of an example's words changed (default: %(default)s, no cap, as "
                            "TextAttack's PWWS; TextDefender: 0.3)")
    words.add_argument("--query-budget", type=query_budget,
                       help="most queries per example: N texts, or Nx, N per word of the whole input (a pair's "
                            "two sentences), TextDefender's 50x. Counted as TextAttack counts them: every text a "
                            "search hands in, cached or not, and the original's first query; the fp32 re-check of "
                            "a success is not one. model_calls in the results: the texts really scored "
                            "(default: no limit, as TextAttack's PWWS)")
    words.add_argument("--population", type=at_least(2), default=attacks.POPULATION,
                       help="genetic: population size (default: %(default)s)")
    words.add_argument("--generations", type=at_least(1), default=attacks.GENERATIONS,
                       help="genetic: iterations (default: %(default)s)")
    meaning = p.add_argument_group("meaning check: each candidate of the word and character searches is scored "
                                   "only if a frozen all-MiniLM-L6-v2 finds it close to its reference, as TextAttack "
                                   "applies USE (MiniLM is not USE: thresholds do not carry over; defaults: "
                                   "TextFooler's recipe)")
    meaning.add_argument("--similarity", type=float, metavar="THRESHOLD",
                         help="least similarity, in [0, 1], a candidate keeps to be scored; TextFooler's and "
                              f"TextDefender's: {similarity.TEXTFOOLER_THRESHOLD} angular (default: off)")
    meaning.add_argument("--similarity-metric", default="cosine", choices=similarity.METRICS,
                         help="cosine of the embeddings, or angular: 1 - arccos(cosine) / pi (default: %(default)s)")
    meaning.add_argument("--similarity-window", type=at_least(0), default=similarity.WINDOW, metavar="WORDS",
                         help="words compared, around the word a candidate changes (a pair's premise counts); "
                              "0: the whole input (default: %(default)s)")
    meaning.add_argument("--similarity-reference", default="current", choices=similarity.REFERENCES,
                         help="what a candidate is compared with: the text it was made from, or the original "
                              "(default: %(default)s)")
    meaning.add_argument("--similarity-skip-short", action=argparse.BooleanOptionalAction, default=True,
                         help="let a text with fewer words than the window pass unchecked, as TextAttack's "
                              "skip_text_shorter_than_window (default: %(default)s)")
    ascc = p.add_argument_group("ASCC (defaults: the release's test attack)")
    ascc.add_argument("--ascc-steps", type=at_least(1), default=ASCC_STEPS, help="Adam steps on the weights (default: %(default)s)")
    pgd = p.add_argument_group("embedding-space PGD")
    pgd.add_argument("--eps", type=at_least(0.0, float), nargs="+", default=[0.02, 0.05, 0.1],
                     help="radii, per token (default: %(default)s)")
    pgd.add_argument("--pgd-steps", type=at_least(1), default=PGD_ATTACK_STEPS, help="PGD steps per radius (default: %(default)s)")
    pgd.add_argument("--pgd-norm", default=PGD_NORM, choices=["l2", "linf"], help="PGD ball, per token (default: %(default)s)")
    bookkeeping = p.add_argument_group("bookkeeping")
    bookkeeping.add_argument("--batch-size", type=at_least(1), default=32,
                             help="texts per forward pass, and PGD's and ASCC's examples per chunk (default: %(default)s)")
    bookkeeping.add_argument("--examples-at-once", type=at_least(1), default=32,
                             help="examples attacked together, their candidates sharing forward passes; 1 = one at "
                                  "a time, with the same results up to float rounding (default: %(default)s)")
    bookkeeping.add_argument("--seed", type=random_seed, default=SEED, help="draws the examples; seeds the genetic attack and PGD (default: %(default)s)")
    bookkeeping.add_argument("--out", help="results folder (default: <run>/eval/<attack>-<synonyms>-<time>); must not exist")
    bookkeeping.add_argument("--join", nargs="+", metavar="DIR",
                             help="instead of attacking: join finished evaluations of one checkpoint on the same "
                                  "examples (their results folders) into the worst case over all their attacks, "
                                  "written to --out (default: beside the first DIR)")
    bookkeeping.add_argument("--resume", metavar="OUT", help="finish the interrupted evaluation in OUT with its own settings "
                                                             "(every other flag is ignored), skipping the examples done")
    bookkeeping.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto: cuda when there is one (default: %(default)s)")
    bookkeeping.add_argument("--amp", action=argparse.BooleanOptionalAction,
                             help="bf16 autocast for the searches and PGD; every success is re-checked in fp32 "
                                  "(default: on with CUDA and on CPUs with native bf16: AVX512-BF16 or AMX)")
    bookkeeping.add_argument("--plot", action="store_true",
                             help="also draw robustness.png: accuracy against PGD radius and against the share of "
                                  "words changed (needs matplotlib: requirements-extra.txt)")
    protocol = p.parse_known_args(argv)[0].protocol
    if protocol:
        p.set_defaults(**PROTOCOLS[protocol])
    return p.parse_args(argv)


def resolve_checkpoint(checkpoint: str | None) -> tuple[str, dict | None]:
    """(model folder or hub name, the run's config.json or None). A run's model is its best/."""
    path = Path(checkpoint) if checkpoint else newest_run()
    if path is None:
        raise UsageError("no run with a best/ checkpoint under runs/: train one with train.py, or pass --checkpoint")
    if path.name == "best" and (path.parent / "config.json").is_file():
        path = path.parent
    if (path / "metrics.jsonl").is_file() and not (path / "best").is_dir():
        raise UsageError(f"{path} is a train.py run with no best/ yet (it saves one at its first dev evaluation): "
                         f"resume it with python train.py --resume {path}, or wait for it")
    if not ((path / "best").is_dir() and (path / "config.json").is_file()):
        return str(path), None
    try:
        run_config = json.loads(read_text(path / "config.json"))
        run_config["config"]["task"], run_config["resolved"]["labels"], run_config["resolved"]["max_length"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"{path}/config.json is not a train.py run configuration ({err!r})") from None
    return str(path / "best"), run_config


def resolve_task(args, run_config: dict | None):
    """The task and its max length: from the run where there is one (a flag may override), else the flags."""
    if run_config is None and args.task is None:
        raise UsageError("a plain model folder needs --task (its labels must be in that task's order)")
    settings = run_config["config"] if run_config else vars(args)
    name = args.task or settings["task"]
    max_length = args.max_length or (run_config["resolved"]["max_length"] if run_config else None)
    if name != "custom":
        return TASKS[name], max_length or TASKS[name].max_length
    run = settings if run_config and settings["task"] == "custom" else {}
    # Columns given on this command line win over the run's own, so that any file can be read.
    text, label, context = (getattr(args, key) or run.get(key) for key in ("text_column", "label_column", "context_column"))
    if run:
        labels = tuple(run_config["resolved"]["labels"])
    elif args.labels:
        labels = tuple(args.labels.split(","))
    elif args.file:
        labels = infer_labels(args.file, label)
    else:
        raise UsageError("--task custom needs --file")
    task = custom_task(text, label, context, labels)
    return task, max_length or task.max_length


def load_synonyms(args):
    """(synonyms, source) for --synonyms, or (None, None) when no attack of --attack takes them."""
    if not [a for a in ATTACKS[args.attack] if a not in NO_SYNONYMS]:
        return None, None
    if args.synonyms == "wordnet":
        if args.synonyms_path:
            raise UsageError("--synonyms-path is for the counter-fitted sources; WordNet is found by itself")
        return synonyms.wordnet_synonyms(args.wordnet_pos)
    if args.synonyms == "counterfitted":
        return synonyms.counterfitted_synonyms(args.synonyms_path, args.data_dir)
    return synonyms.vector_synonyms(args.synonyms_path, args.data_dir, args.neighbours, args.min_cos)


def resume(out: str) -> tuple[argparse.Namespace, list[dict]]:
    """The settings of an interrupted evaluation and the lines it finished, in every part (however
    many processes wrote them, and however many go on)."""
    folder = Path(out)
    try:
        saved = json.loads(read_text(folder / "results.json"))
        settings = saved["settings"]
    except (OSError, UsageError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"--resume {out}: not an evaluate.py results folder ({err})") from None
    missing = set(vars(parse_args([]))) - set(settings) - {"resume"}
    if missing:
        raise UsageError(f"--resume {out}: written by another version of rift (no {', '.join(sorted(missing))} in "
                         "its results.json); start a new evaluation")
    lines = [line for path in eval_folder.parts(folder) for line in eval_folder.read_part(path)]
    return argparse.Namespace(**{**settings, "out": str(folder), "resume": str(folder)}), lines


def load_model(args, device) -> tuple:
    """The classifier, in eval mode on `device`, with its folder, task and max length; its labels must be the task's."""
    model_dir, run_config = resolve_checkpoint(args.checkpoint)
    model, tokenizer = load_classifier(model_dir)
    task, max_length = resolve_task(args, run_config)
    saved_labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    if model.config.num_labels != len(task.labels) or (set(saved_labels) == set(task.labels) and saved_labels != task.labels):
        raise UsageError(f"the model has {len(saved_labels)} classes ({', '.join(saved_labels)}); task {task.name} "
                         f"has {len(task.labels)} labels ({', '.join(task.labels)}), in this order")
    return model.to(device).eval(), tokenizer, task, max_length, model_dir, run_config


def draw_examples(args, task) -> tuple[list, list[int], dict]:
    """TextDefender's protocol: the examples drawn once, so every attack sees the same ones; with
    their indices in the split and the data file's path and sha256."""
    split = load_split(task, args.split, args.data_dir, args.file)
    path = split_file(task, args.split, args.data_dir, args.file)
    data_file = {"path": str(path), "sha256": file_sha256(path)}
    if args.resume:  # the indices drawn at the start must name the same examples
        eval_folder.check_same_data(Path(args.resume), data_file)
    indices = attacks.sample_examples(split, args.num_examples, args.seed, args.min_words, args.length_rule)
    if not indices:
        raise UsageError(f"no example of the {args.split} split has {args.min_words} words or more "
                         f"(--length-rule {args.length_rule})")
    return [split[i] for i in indices], indices, data_file


def attack_plan(args, tokenizer, device, meaning: similarity.MeaningCheck | None) -> tuple[dict[str, tuple], str | None]:
    """Every attack of --attack, in the order they run: name -> (the attack, what its row names it by),
    each with the same .attack(victim, examples, seeds, done) (attacking.WordAttack's contract), the
    searches with the meaning check; and the synonym source."""
    word_synonyms, source = load_synonyms(args)
    plan = {}
    for name in ATTACKS[args.attack]:
        if name == "ascc":  # ASCC is defined on the counter-fitted table, whatever --synonyms says
            table, table_source = synonyms.counterfitted_synonyms(
                args.synonyms_path if args.synonyms == "counterfitted" else None, args.data_dir)
            source = source or table_source
            plan[name] = ASCC(neighbour_table(tokenizer, table).to(device), steps=args.ascc_steps), \
                {"synonyms": "counterfitted"}
        elif name == "pgd":
            for eps in args.eps:
                plan[f"pgd eps={eps:g}"] = PGD(eps, norm=args.pgd_norm, attack_steps=args.pgd_steps), \
                    {"eps": eps, "words_perturbed_pct": None}  # PGD changes no word
        elif name == "deepwordbug":  # every word that may change is a candidate: its edits are drawn in the search
            plan[name] = attacking.WordAttack(name, lambda word: [], args.stopwords, args.max_modify_rate,
                                            args.query_budget, args.examples_at_once, meaning=meaning), \
                {"synonyms": "characters"}
        else:
            options = {"population": args.population, "generations": args.generations} if name == "genetic" else {}
            plan[name] = attacking.WordAttack(name, word_synonyms, args.stopwords, args.max_modify_rate,
                                            args.query_budget, args.examples_at_once, options, meaning), \
                {"synonyms": args.synonyms}
    return plan, source


def run_attacks(plan: dict, victim, examples, indices: list[int], done: list[dict], part: Path, seed: int,
                rank: int, world_size: int) -> tuple[list[dict], dict]:
    """This process's share of every attack: chunk n of victim.batch_size examples goes to process
    n % world_size, whole, so each chunk is attacked as in a one-process run. Each line is written to
    `part` as its example finishes: a line written is a line kept, whatever stops the process."""
    lines, timing = list(done), {}
    seeds = [[seed, index] for index in indices]  # per example: results do not depend on order or process
    with open(part, "a") as jsonl:
        for name, (attack, described) in plan.items():
            finished = {line["index"] for line in done if line["attack"] == name}
            share = [n for n in range(len(examples)) if (n // victim.batch_size) % world_size == rank]
            skip = set(range(len(examples))) - {n for n in share if indices[n] not in finished}
            started, model_seconds = time.perf_counter(), victim.model_seconds
            desc = f"{name} ({described['synonyms']})" if "synonyms" in described else name
            with tqdm(total=len(share), initial=sum(n in skip for n in share), desc=desc, dynamic_ncols=True,
                      disable=rank != 0) as bar:  # closed before any message
                for n, result in attack.attack(victim, examples, seeds, skip):
                    lines.append({"attack": name, "index": indices[n], **result.record()})
                    jsonl.write(json.dumps(lines[-1]) + "\n")
                    jsonl.flush()
                    so_far = attacking.summarize([line for line in lines if line["attack"] == name])
                    bar.update()
                    bar.set_postfix(acc_under_attack=f"{so_far['accuracy_under_attack']:.3f}",
                                    success=f"{so_far['attack_success_rate']:.3f}")
            seconds, attacked = time.perf_counter() - started, len(examples) - len(skip)
            timing[name] = {"seconds_per_example": seconds / max(attacked, 1),  # this process's (rank 0's) only
                            "model_time_share": (victim.model_seconds - model_seconds) / max(seconds, 1e-9)}
    return lines, timing


def makes_text(plan: dict) -> list[str]:
    """The attacks of the plan that make a text: all but PGD, which moves embeddings."""
    return [name for name, (attack, _) in plan.items() if not isinstance(attack, PGD)]


def load_meaning(args, device) -> tuple[similarity.SentenceEncoder | None, similarity.MeaningCheck | None]:
    """The frozen sentence encoder that measures each success's similarity to its original (None
    where no attack of --attack makes a text) and the meaning check of --similarity (None: off)."""
    if args.similarity is not None and not 0 <= args.similarity <= 1:  # NaN fails this too
        raise UsageError(f"--similarity {args.similarity}: a similarity threshold lies between 0 and 1")
    if args.similarity is not None and "ascc" in ATTACKS[args.attack]:
        raise UsageError("--attack ascc takes no meaning check (--similarity, which --protocol textdefender sets): ASCC "
                         "moves every word towards its neighbours at once and makes a text only at its end, so it has "
                         "no candidate to check before scoring one")
    if not [name for name in ATTACKS[args.attack] if name != "pgd"]:
        return None, None
    encoder = similarity.SentenceEncoder(device, args.batch_size)
    if args.similarity is None:
        return encoder, None
    return encoder, similarity.MeaningCheck(encoder, args.similarity, args.similarity_metric, args.similarity_window or None,
                                            args.similarity_reference, args.similarity_skip_short)


def metric_rows(plan: dict, lines: list[dict], timing: dict, examples, clean_right: int) -> tuple[list[dict], dict | None]:
    """The summary rows: clean accuracy, each attack's, and where several word attacks ran the worst
    case over them (PGD moves embeddings, not words: it makes no text a suite could count); with
    the attack that broke each example first."""
    rows = [{"attack": "none", "examples": len(examples), "clean_accuracy": clean_right / len(examples)}]
    texts = makes_text(plan)
    broken_by = None
    for name, (_, described) in plan.items():
        rows.append({"attack": name, **attacking.summarize([line for line in lines if line["attack"] == name]),
                     **described, **timing[name]})
        if len(texts) > 1 and name == texts[-1]:  # robust only where no attack of the run broke the example
            worst, broken_by = attacking.worst_case([line for line in lines if line["attack"] in texts], texts)
            rows.append(worst)
    return rows, broken_by


def main(args: argparse.Namespace) -> dict | None:
    """The evaluation; under torchrun, each process attacks its share of the examples and writes
    its own part, and rank 0 merges them and writes results.json (the other processes return None)."""
    if args.join:
        joined, target = eval_folder.join(args.join, args.out)
        print(f"\n{len(joined['indices'])} examples, model {joined['resolved']['model']}, the worst case over "
              f"{', '.join(joined['attacks'])} -> {target}")
        print(summary_table(joined["metrics"]))
        return joined
    rank, world_size = process_group("gloo", PROCESS_TIMEOUT)  # only barriers and settings cross
    done = []
    if args.resume:  # rank 0 alone reads the parts (and drops their cut-short lines) before any goes on
        args, done = from_rank_zero(resume(args.resume) if rank == 0 else None)
    device = pick_device(args.device)
    amp = default_amp(device) if args.amp is None else args.amp
    if args.plot:
        pyplot()  # fail now, not after the attacks, when matplotlib is missing
    encoder, meaning = load_meaning(args, device)
    model, tokenizer, task, max_length, model_dir, run_config = load_model(args, device)
    examples, indices, data_file = draw_examples(args, task)
    if args.out:
        out = Path(args.out)
    else:
        where = Path(model_dir).parent / "eval" if run_config else Path("runs") / "eval" / Path(model_dir).name
        out = where / f"{args.attack}-{'counterfitted' if args.attack == 'ascc' else args.synonyms}-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(from_rank_zero(str(out)))  # the default folder's time is rank 0's
    plan, synonym_source = attack_plan(args, tokenizer, device, meaning)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "resume"},
        "resolved": {"model": model_dir, "task": task.name, "labels": task.labels, "max_length": max_length,
                     "synonym_source": synonym_source, "amp": amp, "data_file": data_file,
                     "sentence_model": encoder.path if encoder else None},
        "environment": environment(device) | {"processes": world_size},
        "indices": indices,
        "metrics": None,
        "complete": False,  # true once every attack has finished; until then --resume OUT goes on
    }
    with writing(out, not args.resume, rank == 0, lambda: eval_folder.kept_results(out, world_size)):  # this evaluation alone writes there
        if rank == 0:
            eval_folder.write_json(out / "results.json", results)
        if world_size > 1:
            dist.barrier()  # results.json is there before any other process writes its part
        part = out / ("adversarial.jsonl" if world_size == 1 else f"adversarial.rank{rank}.jsonl")
        with attacking.Victim(model, tokenizer, max_length, args.batch_size, amp) as victim:
            lines, timing = run_attacks(plan, victim, examples, indices, done, part, args.seed, rank, world_size)
        if world_size > 1:
            dist.barrier()  # every part is whole
            dist.destroy_process_group()
        if rank != 0:
            return None

        lines = eval_folder.merge(out, list(plan), indices,
                      lambda lines: similarity.success_records(lines, encoder, makes_text(plan)) if encoder else lines)
        clean = predict_proba(model, tokenizer, examples, max_length, args.batch_size, amp=amp).argmax(-1)
        rows, broken_by = metric_rows(plan, lines, timing, examples,
                                      int((clean == torch.tensor([ex.label for ex in examples])).sum()))
        if broken_by is not None:
            results["worst_case_broken_by"] = {str(index): name for index, name in broken_by.items()}
        results |= {"metrics": rows, "complete": True}
        eval_folder.write_json(out / "results.json", results)
        if args.plot:
            plot_robustness(rows, lines, args.max_modify_rate, out / "robustness.png")
        print(f"\n{task.name} {args.split}, {len(examples)} examples, model {model_dir} -> {out}")
        print(summary_table(rows))
        for row in rows:
            if row.get("recheck_mismatches"):
                print(f"warning: {row['recheck_mismatches']} {row['attack']} successes did not hold when re-checked "
                      "alone in fp32 and were counted as failures: batched and single scoring disagree (a bug, "
                      "or a prediction on a knife's edge)")
        return results


def summary_table(rows: list[dict]) -> str:
    """The metrics rows as a person reads them: one unit (percent), under 100 columns, a legend;
    the counts, model calls and timings beyond seconds per example stay in results.json."""
    def percent(value):
        return None if value is None else f"{100 * value:.1f}"
    shown = [{"attack": row["attack"], "synonyms": row.get("synonyms"), "clean": percent(row.get("clean_accuracy")),
              "robust": percent(row.get("accuracy_under_attack")), "success": percent(row.get("attack_success_rate")),
              "changed": f"{row['words_perturbed_pct']:.1f}" if row.get("words_perturbed_pct") is not None else None,
              "queries": f"{row['avg_queries']:.0f}" if "avg_queries" in row else None,
              "seconds": f"{row['seconds_per_example']:.2f}" if "seconds_per_example" in row else None}
             for row in rows]
    columns = {"attack": "attack", "synonyms": "synonyms", "clean": "clean %", "robust": "robust %",
               "success": "success %", "changed": "changed %", "queries": "queries", "seconds": "s/example"}
    worst = [row for row in rows if row["attack"] == "worst case"]
    first_by = "; ".join(f"{n} by {name}" for name, n in worst[0]["broken_first_by"].items()) if worst else ""
    return format_table(shown, columns) + "\n" + SUMMARY_LEGEND + ("\n" + textwrap.fill(
        f"worst case: an example is robust only if it was classified right and no attack above broke it "
        f"(AutoAttack's rule; word attacks only, not PGD); broken first {first_by}.", width=100) if worst else "")


SUMMARY_LEGEND = textwrap.fill(
    "robust: accuracy after the attack; success: the share of the attacked examples (those classified right) "
    "that the attack fooled; changed: the share of a fooled example's words changed; queries: texts scored per "
    "attacked example, as TextAttack counts them. The counts, model calls, fp32 re-checks and the successes' mean "
    "similarity to their originals are in results.json.",
    width=100, break_on_hyphens=False)


def plot_robustness(rows: list[dict], lines: list[dict], max_rate: float, path: Path) -> None:
    """Accuracy against the PGD radius (0 = clean) and against the cap on the share of changed words."""
    plt = pyplot()
    figure, (by_eps, by_rate) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    pgd = [(0.0, rows[0]["clean_accuracy"])] + [(row["eps"], row["accuracy_under_attack"]) for row in rows if "eps" in row]
    by_eps.plot(*zip(*pgd), marker="o")
    by_eps.set(xlabel="PGD radius per token (L2 or L-inf)", ylabel="accuracy", title="embedding-space PGD")
    rates = np.linspace(0, max_rate, 13)
    for search in [row["attack"] for row in rows[1:] if "eps" not in row and row["attack"] != "worst case"]:
        records = [line for line in lines if line["attack"] == search]
        by_rate.plot(rates * 100, attacking.accuracy_by_modify_rate(records, rates), marker=".", label=search)
    by_rate.set(xlabel="most words changed (%)", title="word substitution")
    by_rate.legend()
    figure.tight_layout()
    save_figure(figure, path)
    print(f"robustness curves: {path}")


if __name__ == "__main__":
    run_command(lambda: main(parse_args()))
