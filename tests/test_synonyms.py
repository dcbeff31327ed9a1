"""synonyms.py's sources: WordNet from Debian's dict folder (nltk's own data absent), the
counter-fitted neighbour table of the shared data, and neighbours computed from counter-fitted vectors."""

import json
import os
import zipfile
from pathlib import Path

import nltk
import numpy as np
import pytest
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.corpus.util import LazyCorpusLoader

import attacks
import data
import synonyms
from data import UsageError


class SpyLoader(LazyCorpusLoader):
    """A fresh nltk.corpus.wordnet that records the LookupError nltk raises when its data is missing."""

    def ensure_loaded(self):
        try:
            return LazyCorpusLoader.__getattr__(self, "ensure_loaded")()  # nltk's proxy loads here
        except LookupError as err:
            SpyLoader.raised.append(err)
            raise


def no_nltk_data(monkeypatch, cache: Path):
    """nltk finds no data of its own (whatever this machine has), a fresh lazy loader (nltk caches a
    loaded corpus), and an empty cache: load_wordnet takes the Debian path, independent of order."""
    SpyLoader.raised = []
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(nltk.corpus, "wordnet", SpyLoader("wordnet", WordNetCorpusReader, None))
    monkeypatch.setattr(synonyms, "CACHE", cache)
    monkeypatch.setattr(data, "CACHE", cache)


@pytest.fixture(scope="module")
def debian_wordnet(tmp_path_factory):
    """WordNet as load_wordnet reads it from Debian's folder. nltk opens corpus files only under
    nltk.data.path, to which load_wordnet adds the copy: the patches stay for the module's tests."""
    if not (synonyms.DEBIAN_WORDNET / "index.noun").is_file():
        pytest.skip(f"no WordNet at {synonyms.DEBIAN_WORDNET}: apt-get install wordnet-base")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as monkeypatch:
        no_nltk_data(monkeypatch, cache)
        reader = synonyms.load_wordnet()
        (every_sense, _), (usual_sense, _) = synonyms.wordnet_synonyms("all"), synonyms.wordnet_synonyms("usual")
        yield reader, (every_sense, usual_sense), cache, list(SpyLoader.raised)


# ---------------------------------------------------------------------------------------------
# WordNet


def test_wordnet_loads_from_the_debian_folder_after_nltk_fails_and_adds_lexnames(debian_wordnet):
    reader, _, cache, raised = debian_wordnet
    assert raised and isinstance(raised[0], LookupError)  # nltk's own data was tried first
    folder = cache / "nltk_data" / "wordnet"
    lexnames = (folder / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45
    assert lexnames[0].split("\t") == ["00", "adj.all", "3"] and lexnames[3].split("\t") == ["03", "noun.Tops", "1"]
    assert lexnames[-1].split("\t") == ["44", "adj.ppl", "3"]
    for name in ("data", "index"):
        for pos in ("noun", "verb", "adj", "adv"):
            assert (folder / f"{name}.{pos}").stat().st_size == (synonyms.DEBIAN_WORDNET / f"{name}.{pos}").stat().st_size
    assert isinstance(reader, WordNetCorpusReader)
    assert Path(str(reader.root)).resolve() == folder.resolve()
    assert "film" in {name for s in reader.synsets("movie") for name in s.lemma_names()}


def test_wordnet_copy_is_reused_once_made(debian_wordnet, monkeypatch):
    _, _, cache, _ = debian_wordnet
    no_nltk_data(monkeypatch, cache)
    monkeypatch.setattr(synonyms.shutil, "copy", lambda *a: pytest.fail(f"copied again: {a}"))
    reader = synonyms.load_wordnet()
    assert reader.synsets("film")


def test_wordnet_synonyms_take_every_sense_as_textattack_does(debian_wordnet):
    """TextAttack's WordSwapWordNet: every synset's lemma names as WordNet spells them, phrases
    ("motion_picture") left out; nltk's morphy finds the synsets of an inflected form."""
    _, (every_sense, _), _, _ = debian_wordnet
    assert {"movie", "picture", "flick", "shoot", "take"} <= set(every_sense("film"))  # noun and verb senses
    assert "film" in every_sense("films")  # the base form of an inflection is a candidate, as in TextAttack
    assert "Good" not in every_sense("Good") and "good" in every_sense("Good")  # only the exact spelling is left out
    for word in ("movie", "film", "good", "bad", "great", "dull", "funny", "story", "run", "light", "fast"):
        found = every_sense(word)
        assert found and word not in found and len(found) == len(set(found)), word
        assert not any("_" in s for s in found), (word, found)
    assert every_sense("qwertyuiop") == ()


def test_wordnet_gives_its_synonyms_and_their_record_as_every_source_does(debian_wordnet):
    for pos in synonyms.WORDNET_POS:
        words, source = synonyms.wordnet_synonyms(pos)
        assert source == {"synonyms": "wordnet", "pos": pos} and "movie" in words("film")


def test_wordnet_synonyms_of_the_usual_part_of_speech(debian_wordnet):
    _, (_, usual_sense), _, _ = debian_wordnet
    assert "film" in usual_sense("movie")
    assert {"movie", "picture", "flick"} <= set(usual_sense("film"))
    assert not {"shoot", "take"} & set(usual_sense("film"))  # the verb senses are not film's usual ones
    for word in ("movie", "film", "good", "bad", "great", "dull", "funny", "story", "run", "light", "fast"):
        found = usual_sense(word)
        assert found and word not in found and len(found) == len(set(found)), word
        assert all(s.isalpha() and s == s.lower() for s in found), (word, found)  # no "motion_picture"
    assert usual_sense("qwertyuiop") == ()


def test_an_unknown_part_of_speech_rule_is_a_usage_error(debian_wordnet):
    with pytest.raises(UsageError, match="usual"):
        synonyms.wordnet_synonyms("nouns")


def test_wordnet_substitutions_never_touch_stopword_clitics(debian_wordnet):
    """The real-data face of test_attacks.py::test_substitutions_never_touch_clitics_that_are_stopwords:
    SST-2 splits clitics off ("it 's"), and WordNet knows "s" (second, sulfur, south ...)."""
    _, (every_sense, _), _, _ = debian_wordnet
    words = ("it", "'s", "a", "good", "movie", ",", "i", "'m", "sure", "you", "'d", "agree")
    options = attacks.substitutions(words, every_sense)
    assert set(options) <= {(3, 0), (4, 0), (8, 0), (11, 0)}, {i: options[i][:3] for i in options}


def test_without_any_wordnet_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    no_nltk_data(monkeypatch, tmp_path / "cache")
    monkeypatch.setattr(synonyms, "DEBIAN_WORDNET", tmp_path / "no-wordnet")
    with pytest.raises(UsageError) as err:
        synonyms.load_wordnet()
    assert SpyLoader.raised and isinstance(SpyLoader.raised[0], LookupError)
    assert "apt-get install wordnet-base" in str(err.value) and "nltk.download('wordnet')" in str(err.value)
    assert not (tmp_path / "cache" / "nltk_data").exists()


# ---------------------------------------------------------------------------------------------
# The counter-fitted neighbour table


@pytest.fixture(scope="module")
def neighbours_json(shared_data) -> Path:
    path = shared_data / "synonyms" / "counterfitted_neighbors.json"
    if not path.is_file():
        pytest.skip(f"no {path}")
    return path


def test_counterfitted_table_is_found_under_the_data_dir(neighbours_json, monkeypatch, tmp_path):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path)
    monkeypatch.setattr(data, "CACHE", tmp_path)
    monkeypatch.delenv("RIFT_DATA", raising=False)
    found, source = synonyms.counterfitted_synonyms(data_dir=str(neighbours_json.parent.parent))
    assert source == {"synonyms": "counterfitted", "path": str(neighbours_json)}
    assert "film" in found("movie") and "movie" not in found("movie")
    assert found("qwertyuiop") == ()
    explicit, source = synonyms.counterfitted_synonyms(path=str(neighbours_json))
    assert source["path"] == str(neighbours_json) and explicit("movie") == found("movie")
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or cached


@pytest.mark.parametrize("content", ["{not json", "[\"movie\", \"film\"]", '{"movie": "film"}', '{"movie": 3}'])
def test_a_json_that_is_not_a_neighbour_table_is_a_usage_error(tmp_path, content):
    path = tmp_path / "table.json"
    path.write_text(content)
    with pytest.raises(UsageError, match="table.json"):
        synonyms.counterfitted_synonyms(path=str(path))


def test_a_missing_synonym_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        synonyms.counterfitted_synonyms(path=str(tmp_path / "nope.json"))


def test_a_small_table_given_explicitly(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"good": ["great", "fine"], "bad": []}))
    found, _ = synonyms.counterfitted_synonyms(path=str(path))
    assert found("good") == ("great", "fine") and found("bad") == () and found("ugly") == ()


# ---------------------------------------------------------------------------------------------
# Neighbours from counter-fitted vectors


WORDS = ["movie", "film", "good", "great", "bad", "awful"]


def write_vectors(path: Path, vectors: np.ndarray, words=WORDS) -> Path:
    path.write_text("".join(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n" for w, v in zip(words, vectors)))
    return path


def brute_neighbours(vectors: np.ndarray, k: int, min_cos: float, words=WORDS) -> dict:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    table = {}
    for i, w in enumerate(words):
        others = sorted((j for j in range(len(words)) if j != i), key=lambda j: -cos[i, j])
        table[w] = [words[j] for j in others if cos[i, j] >= min_cos][:k]
    return table, cos


@pytest.fixture
def vectors():
    rng = np.random.default_rng(3)
    v = np.round(rng.normal(size=(6, 4)), 6)
    return v


@pytest.mark.parametrize("k,min_cos", [(2, -1.0), (3, 0.0), (10, 0.0), (5, 0.3)])
def test_neighbours_from_vectors_match_a_numpy_brute_force(vectors, tmp_path, monkeypatch, k, min_cos):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    expected, cos = brute_neighbours(vectors, k, min_cos)
    assert np.abs(cos - min_cos).min() > 1e-4  # no cosine at the threshold: float32 cannot disagree
    assert any(expected[w] != [x for x in WORDS if x != w][:k] for w in WORDS)  # the order matters
    path = write_vectors(tmp_path / "vecs.txt", vectors)
    found, source = synonyms.vector_synonyms(path=str(path), k=k, min_cos=min_cos)
    assert source == {"synonyms": "counterfitted-vectors", "path": str(path), "k": k, "min_cos": min_cos}
    for word in WORDS:
        assert list(found(word)) == expected[word], word
        assert word not in found(word) and len(found(word)) <= k


def test_neighbours_from_a_zip_of_the_vectors(vectors, tmp_path, monkeypatch):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    text = write_vectors(tmp_path / "vecs.txt", vectors)
    archive = tmp_path / "vecs.txt.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(text, "counter-fitted-vectors.txt")
    text.unlink()
    found, _ = synonyms.vector_synonyms(path=str(archive), k=3, min_cos=0.0)
    expected, _ = brute_neighbours(vectors, 3, 0.0)
    assert {w: list(found(w)) for w in WORDS} == expected


@pytest.mark.parametrize("bad_line", ["great 1 2 x 4", "great 1 2 3", "great"])
def test_a_malformed_vector_line_is_a_usage_error_with_its_line_number(vectors, tmp_path, monkeypatch, bad_line):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    path = write_vectors(tmp_path / "vecs.txt", vectors)
    lines = path.read_text().splitlines()
    lines[3] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"vecs.txt:4:"):
        synonyms.vector_synonyms(path=str(path))


def test_neighbours_are_cached_and_reused_until_the_vectors_change(vectors, tmp_path, monkeypatch):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    path = write_vectors(tmp_path / "vecs.txt", vectors)
    first, _ = synonyms.vector_synonyms(path=str(path), k=3, min_cos=0.0)
    cached = list((tmp_path / "cache" / "synonyms").iterdir())
    assert len(cached) == 1
    assert json.loads(cached[0].read_text()) == brute_neighbours(vectors, 3, 0.0)[0]
    cached[0].write_text(json.dumps({"movie": ["from-the-cache"]}))  # newer than the vectors
    again, _ = synonyms.vector_synonyms(path=str(path), k=3, min_cos=0.0)
    assert again("movie") == ("from-the-cache",)
    later = cached[0].stat().st_mtime + 10
    os.utime(path, (later, later))  # the vectors changed since: computed afresh
    fresh, _ = synonyms.vector_synonyms(path=str(path), k=3, min_cos=0.0)
    assert fresh("movie") == first("movie") != ("from-the-cache",)


def test_two_vector_files_of_the_same_name_do_not_share_a_cache_entry(tmp_path, monkeypatch):
    """A second, different vectors.txt (older than the first one's cache entry) must not get the
    first one's neighbours: the cache is keyed by the file itself, not only its name."""
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    rng = np.random.default_rng(5)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    b = write_vectors(tmp_path / "b" / "vectors.txt", rng.normal(size=(6, 4)), ["x", "y", "z", "u", "v", "w"])
    os.utime(b, (1_000_000_000, 1_000_000_000))  # an older file, e.g. unpacked from an archive
    a = write_vectors(tmp_path / "a" / "vectors.txt", rng.normal(size=(6, 4)))
    from_a, _ = synonyms.vector_synonyms(path=str(a), k=3, min_cos=-1.0)
    from_b, _ = synonyms.vector_synonyms(path=str(b), k=3, min_cos=-1.0)
    assert from_a("movie") and from_b("movie") == ()
    assert len(from_b("x")) == 3


def test_vectors_are_found_under_the_data_folder(vectors, tmp_path, monkeypatch):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    (tmp_path / "data" / "synonyms").mkdir(parents=True)
    write_vectors(tmp_path / "data" / "synonyms" / "counter-fitted-vectors.txt", vectors)
    found, source = synonyms.vector_synonyms(data_dir=str(tmp_path / "data"), k=3, min_cos=0.0)
    assert source["path"] == str(tmp_path / "data" / "synonyms" / "counter-fitted-vectors.txt")
    assert {w: list(found(w)) for w in WORDS} == brute_neighbours(vectors, 3, 0.0)[0]


def test_without_vectors_and_offline_the_error_names_the_ways_out(tmp_path, monkeypatch):
    monkeypatch.setattr(synonyms, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("RIFT_DATA", raising=False)
    monkeypatch.setattr(synonyms, "VECTORS_URL", "http://127.0.0.1:9/counter-fitted-vectors.txt.zip")  # nothing listens
    with pytest.raises(UsageError, match="--synonyms-path.*--data-dir"):
        synonyms.vector_synonyms(data_dir=str(tmp_path))
    assert not list((tmp_path / "cache").rglob("*.part"))
