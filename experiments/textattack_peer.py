"""TextAttack 0.3.11's PWWS or DeepWordBug against a Hugging Face sequence-classification model folder on a TSV file.

The peer harness's run_pwws.py (../shared/peers/textattack, whose README.md says what it does and
why its offline workarounds change no result), copied here and given --recipe and --seed; its
output files and their fields are the harness's, plus `attack` and `seed` in results.json.

    python experiments/textattack_peer.py --recipe deepwordbug --model MODEL_DIR --file DATA.tsv --out OUT_DIR

Any Python may start it: it starts itself again in the harness's venv (built by the harness's
setup.sh under ${RIFT_PEERS:-~/.cache/rift-peers}/textattack) with the variables run.sh sets, before
anything of TextAttack's is imported.
"""
import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "peers" / "textattack"
TEXTATTACK_SEED = 765  # AttackArgs' default random_seed: without --seed a run is what TextAttack does by itself


def fail(message: str):
    sys.exit(f"error: {message}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, default=HARNESS,
                        help="the TextAttack harness folder: its stubs/ and setup.sh "
                             "(default: ../shared/peers/textattack)")
    parser.add_argument("--recipe", choices=["pwws", "deepwordbug"], default="pwws",
                        help="pwws: PWWSRen2019; deepwordbug: DeepWordBugGao2018; each .build(model_wrapper) as is "
                             "(default: %(default)s)")
    parser.add_argument("--model", required=True, help="folder for AutoModelForSequenceClassification/AutoTokenizer")
    parser.add_argument("--file", required=True, help="TSV with a header row, unquoted; labels = the model's class ids")
    parser.add_argument("--text-column", help="default: 'sentence' or 'text', whichever the header has")
    parser.add_argument("--label-column", default="label", help="the label column (default: %(default)s)")
    parser.add_argument("--n", type=int, default=200,
                        help="attack the first N rows, no shuffling (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokenizer.model_max_length, which TextAttack pads every query to; 0 = keep the "
                             "tokenizer's (default: %(default)s)")
    parser.add_argument("--synonyms", choices=["wordnet", "counterfitted"],
                        help="pwws only: WordNet (the recipe's own) or the table of --neighbours-json "
                             "(default: wordnet)")
    parser.add_argument("--neighbours-json", help="JSON {word: [neighbours]}; needed by --synonyms counterfitted")
    parser.add_argument("--seed", type=int, default=TEXTATTACK_SEED,
                        help="TextAttack's AttackArgs.random_seed, which seeds random, numpy and torch before the "
                             "attack: DeepWordBug draws its edits from them (default: %(default)s, TextAttack's)")
    parser.add_argument("--out", required=True, help="output folder: results.json, adversarial.jsonl")
    args = parser.parse_args(argv)
    if args.recipe == "deepwordbug" and (args.synonyms or args.neighbours_json):
        parser.error("--recipe deepwordbug edits characters: it takes no --synonyms or --neighbours-json")
    args.synonyms = args.synonyms or ("wordnet" if args.recipe == "pwws" else "characters")
    if args.synonyms == "counterfitted" and not args.neighbours_json:
        parser.error("--synonyms counterfitted needs --neighbours-json")
    args.peer = args.peer.resolve()
    return args


def peer_home() -> Path:
    """Where the harness's setup.sh puts its venv, nltk_data and caches."""
    return Path(os.environ.get("RIFT_PEERS") or Path.home() / ".cache" / "rift-peers") / "textattack"


def run_sh_environment(harness: Path) -> dict[str, str]:
    """The variables the harness's run.sh exports: where nltk, TextAttack and Hugging Face find
    their files, all offline."""
    home = peer_home()
    return {"NLTK_DATA": str(home / "nltk_data"), "PYTHONPATH": str(harness / "stubs"),
            "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TA_CACHE_DIR": str(home / "cache" / "textattack"),
            "HF_HOME": str(home / "cache" / "huggingface"), "MPLCONFIGDIR": str(home / "cache" / "matplotlib")}


def run_in_harness(harness: Path, argv: list[str]) -> None:
    """Start this script again in the harness's venv with run.sh's variables, unless it runs there
    already. A new process, because stubs/sitecustomize.py imports nltk when Python starts, and nltk
    reads NLTK_DATA once, at import."""
    venv, variables = peer_home() / "venv", run_sh_environment(harness)
    if Path(sys.prefix).resolve() == venv.resolve() and all(os.environ.get(k) == v for k, v in variables.items()):
        return
    if not (venv / "bin" / "python").is_file():
        fail(f"no venv at {venv}: run {harness / 'setup.sh'} once")
    if not (harness / "stubs" / "sitecustomize.py").is_file():
        fail(f"no TextAttack harness at {harness}: pass --peer (the folder of run.sh and stubs/)")
    python = str(venv / "bin" / "python")
    os.execve(python, [python, str(Path(__file__).resolve()), *argv], {**os.environ, **variables})


def read_rows(path, text_col, label_col, n):
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        text_col = text_col or next((c for c in ("sentence", "text") if c in header), None)
        if text_col not in header or label_col not in header:
            fail(f"{path}: header {header} lacks text column {text_col!r} or label column {label_col!r}")
        text_index, label_index = header.index(text_col), header.index(label_col)
        rows = [(row[text_index], int(row[label_index])) for row in reader if row]
    if not rows:
        fail(f"{path}: no data rows")
    return text_col, rows[:n]


args = parse_args()
run_in_harness(args.peer, sys.argv[1:])

# TextAttack calls nltk.download at first import and in WordSwapWordNet(); offline it would only fail.
# Neither recipe needs anything it asks for beyond the wordnet + stopwords already in NLTK_DATA. Record the calls.
import nltk  # noqa: E402

NLTK_DOWNLOADS = []
nltk.download = lambda info_or_id=None, *a, **k: NLTK_DOWNLOADS.append(str(info_or_id)) or True

import torch, transformers, textattack  # noqa: E401, E402
from textattack.attack_recipes import DeepWordBugGao2018, PWWSRen2019  # noqa: E402
from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult  # noqa: E402
from textattack.constraints.pre_transformation import RepeatModification, StopwordModification  # noqa: E402
from textattack.goal_functions import UntargetedClassification  # noqa: E402
from textattack.metrics.attack_metrics import AttackQueries, WordsPerturbed  # noqa: E402
from textattack.search_methods import GreedyWordSwapWIR  # noqa: E402
from textattack.transformations import WordSwap  # noqa: E402


class CountingWrapper(textattack.models.wrappers.HuggingFaceModelWrapper):
    """The stock wrapper plus a count of texts really passed to the model and the time spent in those calls."""
    texts, seconds = 0, 0.0

    def __call__(self, text_input_list):
        t = time.perf_counter()
        out = super().__call__(text_input_list)
        self.seconds += time.perf_counter() - t
        self.texts += len(text_input_list)
        return out


class WordSwapNeighbours(WordSwap):
    """Replacements = table[word.lower()], each kept as given (e.g. Jia et al.'s counter-fitted neighbours)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def _get_replacement_words(self, word):
        return list(self.table.get(word.lower(), []))


def build_attack(args, wrapper):
    """The --recipe's Attack, and the words results.json describes it with."""
    if args.recipe == "deepwordbug":
        return DeepWordBugGao2018.build(wrapper), (
            "textattack.attack_recipes.DeepWordBugGao2018 as is: CompositeTransformation of "
            "WordSwapNeighboringCharacterSwap, WordSwapRandomCharacterSubstitution, WordSwapRandomCharacterDeletion, "
            "WordSwapRandomCharacterInsertion (random_one each), RepeatModification, StopwordModification (NLTK "
            "English, 179 words), LevenshteinEditDistance(30), UntargetedClassification, GreedyWordSwapWIR('unk')")
    if args.synonyms == "wordnet":
        return PWWSRen2019.build(wrapper), (
            "textattack.attack_recipes.PWWSRen2019 as is: WordSwapWordNet (NLTK WordNet 3.0, lang 'eng'), "
            "RepeatModification, StopwordModification (NLTK English, 179 words), UntargetedClassification, "
            "GreedyWordSwapWIR('weighted-saliency')")
    with open(args.neighbours_json, encoding="utf-8") as f:
        table = json.load(f)
    return textattack.Attack(UntargetedClassification(wrapper), [RepeatModification(), StopwordModification()],
                             WordSwapNeighbours(table), GreedyWordSwapWIR("weighted-saliency")), (
        "PWWSRen2019 with WordSwapWordNet replaced by a WordSwap returning table[word.lower()] from "
        "--neighbours-json (neighbours as given); same RepeatModification, StopwordModification "
        "(NLTK English, 179 words), UntargetedClassification, GreedyWordSwapWIR('weighted-saliency')")


text_col, rows = read_rows(args.file, args.text_column, args.label_column, args.n)
tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
model = transformers.AutoModelForSequenceClassification.from_pretrained(args.model).eval()
stock_max_length = tokenizer.model_max_length
if args.max_length:
    tokenizer.model_max_length = args.max_length
# 1e30 is transformers' "no limit", which HuggingFaceModelWrapper replaces by 512
max_length = 512 if tokenizer.model_max_length == int(1e30) else tokenizer.model_max_length
bad = sorted({y for _, y in rows if not 0 <= y < model.config.num_labels})
if bad:
    fail(f"labels {bad} outside the model's {model.config.num_labels} classes")
n_truncated = sum(len(ids) > max_length for ids in tokenizer([text for text, _ in rows])["input_ids"])
wrapper = CountingWrapper(model, tokenizer)
attack, recipe = build_attack(args, wrapper)

per_example = []  # (seconds, real model texts) of each Attack.attack call, in order
attack_one = attack.attack


def timed_attack(example, label):
    started, texts_before = time.perf_counter(), wrapper.texts
    result = attack_one(example, label)
    per_example.append((time.perf_counter() - started, wrapper.texts - texts_before))
    return result


attack.attack = timed_attack
# Attacker.attack_dataset seeds random, numpy and torch with random_seed before the first example.
attack_args = textattack.AttackArgs(num_examples=len(rows), disable_stdout=True, random_seed=args.seed)
attacker = textattack.Attacker(attack, textattack.datasets.Dataset(rows), attack_args)
started = time.perf_counter()
results = attacker.attack_dataset()
wall = time.perf_counter() - started

KIND = {SuccessfulAttackResult: "successful", FailedAttackResult: "failed", SkippedAttackResult: "skipped"}
kinds = [KIND[type(result)] for result in results]
n, succ, fail_count, skip = len(results), kinds.count("successful"), kinds.count("failed"), kinds.count("skipped")
attacked = succ + fail_count
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "adversarial.jsonl"), "w", encoding="utf-8") as f:
    for i, ((_, label), result, kind, (seconds, texts)) in enumerate(zip(rows, results, kinds, per_example)):
        original, perturbed = result.original_result, result.perturbed_result
        f.write(json.dumps({
            "row": i, "label": label, "result": kind, "original_text": original.attacked_text.text,
            "perturbed_text": perturbed.attacked_text.text, "original_pred": int(original.output),
            "perturbed_pred": int(perturbed.output),
            "words_changed": len(original.attacked_text.all_words_diff(perturbed.attacked_text)),
            "queries": int(result.num_queries), "real_model_texts": texts, "seconds": round(seconds, 4)},
            ensure_ascii=False) + "\n")

real_attacked = sum(texts for (_, texts), kind in zip(per_example, kinds) if kind != "skipped")
summary = {
    "tool": "TextAttack", "textattack_version": version("textattack"), "attack": args.recipe, "recipe": recipe,
    "synonyms": args.synonyms,
    "neighbours_json": os.path.abspath(args.neighbours_json) if args.synonyms == "counterfitted" else None,
    "seed": args.seed,
    "model": os.path.abspath(args.model), "model_class": type(model).__name__,
    "max_length": max_length, "tokenizer_stock_max_length": stock_max_length,
    "rows_longer_than_max_length": n_truncated,
    "data_file": os.path.abspath(args.file), "data_sha256": hashlib.sha256(open(args.file, "rb").read()).hexdigest(),
    "text_column": text_col, "label_column": args.label_column,
    "n_examples": n, "successful": succ, "failed": fail_count, "skipped": skip,
    "clean_accuracy": attacked / n, "accuracy_under_attack": fail_count / n,
    "attack_success_rate": succ / attacked if attacked else None,
    "words_perturbed_pct": WordsPerturbed().calculate(results)["avg_word_perturbed_perc"] if succ else None,
    "avg_queries": AttackQueries().calculate(results)["avg_num_queries"] if attacked else None,
    "avg_queries_note": "TextAttack's AttackQueries: mean num_queries over attacked (non-skipped) examples, "
                        "cache hits included",
    "real_model_texts": wrapper.texts,
    "real_model_texts_per_attacked_example": real_attacked / attacked if attacked else None,
    "seconds_per_example": wall / n, "total_wall_s": wall, "model_call_s": wrapper.seconds,
    "fraction_wall_in_model_calls": wrapper.seconds / wall, "torch_threads": torch.get_num_threads(),
    "attack_args": {"num_examples": n, "disable_stdout": True, "random_seed": attack_args.random_seed,
                    "query_budget": attack_args.query_budget,
                    "goal_function_batch_size": attack.goal_function.batch_size},
    "nltk_download_calls_skipped": NLTK_DOWNLOADS,
    "versions": {"python": platform.python_version(), **{package: version(package) for package in (
        "textattack", "torch", "transformers", "tokenizers", "nltk", "numpy")}},
}
with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(summary, f, indent=1, default=float)
pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"  # noqa: E731
print(f"{args.recipe} ({args.synonyms}): n {n} | successful {succ} failed {fail_count} skipped {skip} | "
      f"clean acc {pct(attacked / n)} | acc under attack {pct(fail_count / n)} | "
      f"success rate {pct(summary['attack_success_rate'])} | words perturbed {summary['words_perturbed_pct']}% | "
      f"avg queries {summary['avg_queries']} | real model texts {wrapper.texts} | {wall:.1f} s | -> {args.out}")
