"""Parity with TextAttack: its PWWS (0.3.11, the peer harness in ../shared/peers/textattack, a check
run beside rift and never a dependency) and rift's default PWWS on the same models and sentences,
with how often their outcomes agree and how much faster rift is -> results/parity-sst2.*

    python experiments/parity.py --checkpoints RUN RUN   # both tools on each train.py run on SST-2
    python experiments/parity.py --table-only            # the page from results/parity-sst2.json
"""

import json
import subprocess
from pathlib import Path

# study first: it puts the repository root, and so the core, on sys.path
from study import (REPO, data_flags, evaluated, example_statuses, parser, read_document, run_cli, run_config,
                   write_document, write_page)

import attacks
import synonyms
from cli import SEED, at_least, environment, format_table, pick_device, run_command
from data import TASKS, UsageError, load_split, read_text

PARITY_SYNONYMS = ("wordnet", "counterfitted")
COLUMNS = {"model": "model", "synonyms": "synonyms", "tool": "tool", "clean_accuracy": "clean acc",
           "accuracy_under_attack": "acc under attack", "attack_success_rate": "success rate",
           "words_perturbed_pct": "% words", "avg_queries": "queries", "model_texts": "texts scored",
           "seconds_per_example": "s/example", "same_outcome": "same outcome", "speedup": "x faster"}


def peer_results(folder: Path) -> Path:
    """The harness's results.json, written when its attack has finished."""
    return folder / "textattack" / "results.json"


def parity(checkpoints: list[str] | None, peer: Path, examples: int, root: Path, results_dir: Path,
           data_dir: str | None) -> dict:
    """TextAttack 0.3.11's PWWS and rift's default PWWS on the same `examples` sentences of each
    train.py run of `checkpoints`, one after the other in this process, so that the speed ratio
    holds on one machine at one time. Finished runs are not repeated."""
    peer = peer / "run.sh"
    if not peer.is_file():
        raise UsageError(f"no TextAttack harness at {peer}: pass --peer (the folder of run.sh; run its setup.sh once)")
    if not checkpoints:
        raise UsageError("parity needs --checkpoints: two or more train.py runs on SST-2")
    for run in map(Path, checkpoints):
        if not (run / "config.json").is_file() or not (run / "best").is_dir():
            raise UsageError(f"{run} is not a train.py run folder (config.json and best/)")
    root.mkdir(parents=True, exist_ok=True)
    sentences = root / "sentences.tsv"  # drawn as evaluate.py draws: at least 4 words
    test = load_split(TASKS["sst2"], "test", data_dir)
    drawn = [test[i] for i in attacks.sample_examples(test, examples, SEED)]
    sentences.write_text("sentence\tlabel\n" + "".join(f"{ex.text}\t{ex.label}\n" for ex in drawn))
    neighbours = synonyms.counterfitted_synonyms(None, data_dir)[1]["path"]
    rows = []
    for checkpoint in checkpoints:
        run = Path(checkpoint)
        max_length = run_config(run)["resolved"]["max_length"]
        for source in PARITY_SYNONYMS:
            folder = root / f"{run.name}-{source}"
            if not peer_results(folder).is_file():
                command = ["bash", str(peer), "--model", str(run / "best"), "--file", str(sentences), "--n",
                           str(len(drawn)), "--max-length", str(max_length), "--synonyms", source,
                           "--out", str(folder / "textattack")]
                command += ["--neighbours-json", neighbours] if source == "counterfitted" else []
                print("+ " + " ".join(command), flush=True)
                if subprocess.run(command).returncode != 0:
                    raise UsageError(f"the TextAttack harness failed on {run} ({source}); its error is above")
            run_cli(["evaluate.py", "--checkpoint", str(run), "--file", str(sentences), "--num-examples",
                     str(len(drawn)), "--min-words", "0", "--attack", "pwws", "--synonyms", source,
                     "--out", str(folder / "rift"), *data_flags(data_dir)], folder / "rift")
            rows += parity_rows(run.name, source, folder)
    document = write_document(results_dir, "parity-sst2", {
        "sentences": str(sentences), "examples": len(drawn), "checkpoints": checkpoints, "rows": rows,
        "environment": environment(pick_device("cpu"))})
    render(document, results_dir)
    return document


def parity_rows(model: str, source: str, folder: Path) -> list[dict]:
    """Both tools' rows for one model and synonym source, and how often their outcomes agree."""
    peer = json.loads(read_text(peer_results(folder)))
    ours = evaluated(folder / "rift")
    pwws = next(row for row in ours["metrics"] if row["attack"] == "pwws")
    theirs = {line["row"]: line["result"]
              for line in map(json.loads, read_text(folder / "textattack" / "adversarial.jsonl").splitlines())}
    mine = example_statuses(folder / "rift")
    agree = sum(theirs[n] == mine[n] for n in mine) / len(mine)
    common = {"model": model, "synonyms": source}
    return [common | {"tool": "TextAttack 0.3.11", "clean_accuracy": peer["clean_accuracy"],
                      "accuracy_under_attack": peer["accuracy_under_attack"],
                      "attack_success_rate": peer["attack_success_rate"],
                      "words_perturbed_pct": peer["words_perturbed_pct"], "avg_queries": peer["avg_queries"],
                      "model_texts": peer["real_model_texts_per_attacked_example"],
                      "seconds_per_example": peer["seconds_per_example"]},
            common | {"tool": "rift", "clean_accuracy": pwws["clean_accuracy"],
                      "accuracy_under_attack": pwws["accuracy_under_attack"],
                      "attack_success_rate": pwws["attack_success_rate"],
                      "words_perturbed_pct": pwws["words_perturbed_pct"], "avg_queries": pwws["avg_queries"],
                      "model_texts": pwws["avg_model_calls"], "seconds_per_example": pwws["seconds_per_example"],
                      "same_outcome": agree, "speedup": peer["seconds_per_example"] / pwws["seconds_per_example"]}]


def render(document: dict, folder: Path) -> None:
    table = format_table(document["rows"], COLUMNS)
    write_page(folder / "parity-sst2.md",
        "# Parity with TextAttack: rift's PWWS beside TextAttack 0.3.11's, example by example\n\n"
        "Does rift's default PWWS reach the same outcome as TextAttack's on the same models and sentences, and how\n"
        f"much faster is it? Made by `python experiments/parity.py --checkpoints {' '.join(document['checkpoints'])}`\n"
        f"(per-example outcomes in `{Path(document['sentences']).parent}/`).\n\n```\n{table}\n```\n")
    print(table)


def parse_args(argv=None):
    p = parser(__doc__, runs="runs/parity", encoder=False)
    p.add_argument("--checkpoints", nargs="+", help="the train.py runs on SST-2 attacked by both tools")
    p.add_argument("--examples", type=at_least(1), default=200,
                   help=f"SST-2 test sentences, drawn with seed {SEED} (default: %(default)s)")
    p.add_argument("--peer", type=Path, default=REPO.parent / "shared" / "peers" / "textattack",
                   help="the TextAttack harness folder (default: ../shared/peers/textattack)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table_only:
        render(read_document(args.results_dir, "parity-sst2"), args.results_dir)
        return
    parity(args.checkpoints, args.peer, args.examples, args.runs, args.results_dir, args.data_dir)


if __name__ == "__main__":
    run_command(main)
