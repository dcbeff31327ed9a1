"""An evaluate.py results folder, written so that nothing is lost or mixed: results.json replaced
whole, adversarial.jsonl (or under torchrun one part per process) appended line by line as each
example finishes, read back for --resume with a line cut short by a kill dropped, merged into one
file in a fixed order at the end, and what a stopped evaluation has kept, said in one line; and
finished folders of one checkpoint joined into the worst case over all their attacks (--join)."""

import json
from datetime import datetime
from pathlib import Path

import attacking
from checkpoints import writing
from data import UsageError, read_text


def read_part(path: Path) -> list[dict]:
    """The lines of one adversarial file (adversarial.jsonl, or one process's part). A last line
    cut short by an interruption is dropped from the file (its example is attacked again)."""
    text = read_text(path) if path.is_file() else ""
    rows, lines = text.splitlines(), []
    for number, row in enumerate(rows, 1):
        try:
            lines.append(json.loads(row))
        except json.JSONDecodeError:
            if number < len(rows) or text.endswith("\n"):
                raise UsageError(f"{path}:{number}: not a JSON line; the evaluation cannot be resumed") from None
            path.write_text("".join(r + "\n" for r in rows[:-1]))  # the line the interruption cut short
    return lines


def parts(folder: Path) -> list[Path]:
    """adversarial.jsonl and the parts of the processes of a torchrun evaluation not yet merged."""
    return [folder / "adversarial.jsonl", *sorted(folder.glob("adversarial.rank*.jsonl"))]


def check_same_data(out: Path, data_file: dict) -> None:
    """A resumed evaluation reads the bytes it began on."""
    began = json.loads(read_text(out / "results.json"))["resolved"]["data_file"]
    if began["sha256"] != data_file["sha256"]:
        raise UsageError(f"--resume {out}: its data file {data_file['path']} has changed since the evaluation "
                         f"began (sha256 {began['sha256'][:12]}..., now {data_file['sha256'][:12]}...); finish it on "
                         "the data it began on, or start a new evaluation")


def write_json(path: Path, record: dict) -> None:
    """results.json, replaced whole: a full disk or a kill leaves the previous one, which --resume reads."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(record, indent=2))
    part.replace(path)


def kept_results(out: Path, world_size: int) -> str:
    """What an evaluation stopped now has kept in `out`, and how to finish it."""
    try:
        complete = json.loads(read_text(out / "results.json"))["complete"]
    except (OSError, UsageError, json.JSONDecodeError, KeyError, TypeError):
        return f"nothing was kept in {out}"
    if complete:
        return f"the results in {out} are complete"
    finished = sum(len(read_text(path).splitlines()) for path in parts(out) if path.is_file())
    launcher = f"torchrun --nproc-per-node {world_size}" if world_size > 1 else "python"
    return f"{out} keeps {finished} attacked examples: finish with {launcher} evaluate.py --resume {out}"


def merge(folder: Path, searches: list[str], indices: list[int], describe) -> list[dict]:
    """Every part's lines as the one adversarial.jsonl, attack by attack in the order they ran and
    each attack's in example order (results.json's indices): the same file however many processes
    wrote it, in whatever order their examples finished, and whether or not it was resumed; each
    line with what `describe` adds once all are in. The parts go once merged; a line in two files
    (a merge cut short) is kept once."""
    position = {index: n for n, index in enumerate(indices)}
    lines = {(line["attack"], line["index"]): line for path in parts(folder) for line in read_part(path)}
    ordered = describe(sorted(lines.values(), key=lambda line: (searches.index(line["attack"]), position[line["index"]])))
    staged = folder / "adversarial.jsonl.merging"
    staged.write_text("".join(json.dumps(line) + "\n" for line in ordered))
    staged.replace(folder / "adversarial.jsonl")
    for path in parts(folder)[1:]:
        path.unlink()
    return ordered


def join(folders: list[str], out: str | None) -> tuple[dict, Path]:
    """The worst case over the attacks of several finished evaluations of one checkpoint on the
    same examples: each folder's rows, then the row that counts an example robust only if no attack
    of any folder broke it. Each attack is named with its synonym source, which tells folders apart
    (`attacks`). Returns the joined results and the folder they were written to."""
    runs = []
    for folder in map(Path, folders):
        try:
            saved = json.loads(read_text(folder / "results.json"))
        except (OSError, UsageError, json.JSONDecodeError) as err:
            raise UsageError(f"--join {folder}: not an evaluate.py results folder ({err})") from None
        if not saved.get("complete"):
            raise UsageError(f"--join {folder}: the evaluation has not finished; finish it with --resume {folder}")
        runs.append((folder, saved))
    first, reference = runs[0]
    for folder, saved in runs[1:]:
        if (saved["resolved"]["model"], saved["indices"]) != (reference["resolved"]["model"], reference["indices"]):
            raise UsageError(f"--join: {folder} evaluated another checkpoint or other examples than {first}; join "
                             "evaluations of one checkpoint on the same examples (--num-examples, --seed, split)")
    rows, lines, names = [reference["metrics"][0]], [], []
    for folder, saved in runs:
        for row in saved["metrics"][1:]:
            if row["attack"] == "worst case" or "eps" in row:  # PGD moves embeddings, not words: not a text
                continue
            name = f"{row['attack']}/{row['synonyms']}"
            if name in names:
                raise UsageError(f"--join: {name} is in two of the folders; join each attack once")
            names.append(name)
            rows.append(row)
            lines += [line | {"attack": name} for line in read_part(folder / "adversarial.jsonl")
                      if line["attack"] == row["attack"]]
    worst, broken_by = attacking.worst_case(lines, names)
    rows.append(worst)
    joined = {"joined": [str(folder) for folder, _ in runs], "attacks": names, "resolved": reference["resolved"],
              "indices": reference["indices"], "metrics": rows,
              "worst_case_broken_by": {str(index): name for index, name in broken_by.items()}, "complete": True}
    target = Path(out) if out else first.parent / f"worst-case-{datetime.now():%Y%m%d-%H%M%S}"
    with writing(target, True, True, lambda: f"nothing was kept in {target}"):
        write_json(target / "results.json", joined)
    return joined, target
