"""Files from outside: every one is read through data.read_text, so bytes that are not UTF-8 stop
with one line naming the file and the byte; every public original is checked against its pinned
sha256 before it is used."""

import zipfile

import pytest

import attacks
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


def test_evaluate_on_a_file_that_is_not_utf8_is_a_one_line_error(tiny_model, tmp_path):
    (tmp_path / "bytes.tsv").write_bytes(NOT_UTF8)
    result = run_cli("--checkpoint", tiny_model, "--task", "custom", "--file", tmp_path / "bytes.tsv",
                     "--out", tmp_path / "out", script="evaluate.py", cache=tmp_path / "cache")
    assert_one_line_error(result, f"{tmp_path / 'bytes.tsv'}: not UTF-8 (byte 0)")
    assert not (tmp_path / "out").exists()


def test_a_neighbour_table_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "table.json"
    raw = b'{"good": ["fine", "' + NOT_UTF8 + b'"]}'
    path.write_bytes(raw)
    with pytest.raises(UsageError) as err:
        attacks.counterfitted_synonyms(path=str(path))
    assert str(err.value) == f"{path}: not UTF-8 (byte {raw.index(NOT_UTF8)}); save it as UTF-8"


@pytest.mark.parametrize("zipped", [False, True])
def test_a_vector_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path, monkeypatch, zipped):
    monkeypatch.setattr(attacks, "CACHE", tmp_path / "cache")
    raw = b"good 1.0 0.0\nfine 0.9 0.1\nbad" + NOT_UTF8 + b" 0.0 1.0\n"
    path, where = tmp_path / "vectors.txt", tmp_path / "vectors.txt"
    path.write_bytes(raw)
    if zipped:
        path, where = tmp_path / "vectors.zip", f"{tmp_path / 'vectors.zip'}/vectors.txt"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("vectors.txt", raw)
    with pytest.raises(UsageError) as err:
        attacks.vector_synonyms(path=str(path), k=1, min_cos=0.0)
    assert str(err.value) == f"{where}: not UTF-8 (byte {raw.index(NOT_UTF8)}); save it as UTF-8"
    assert not (tmp_path / "cache").exists()  # nothing cached from a file that could not be read
