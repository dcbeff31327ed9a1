"""similarity.py against independent references: the embeddings against plain transformers (the
model, a mask-weighted mean, a cosine), the window against TextAttack's text_window_around_index
restated, the check inside every search against a toy victim and a stand-in encoder (a dissimilar
candidate that would fool the model is never scored; threshold 0 drops nothing), TextAttack's pick
of the most similar success, and the similarity and changed share of each success in the records."""

import math
import re

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import attacking
import attacks
import evaluate
import rift
import similarity
from data import Example, UsageError
from test_attacks import MAX_LENGTH, BagOfWords, dict_synonyms, random_case, reference_logits

TEXTS = ["A gripping, well-made film.", "A gripping and well made movie .", "The stock market fell sharply today",
         "it's not bad -- really", " ".join(["a long review that goes on"] * 60)]  # the last one past 256 tokens


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(rift.model_path(rift.DEFAULT_MODEL))


@pytest.fixture(scope="module")
def encoder():
    return similarity.SentenceEncoder(torch.device("cpu"), batch_size=2)


def test_embeddings_and_cosine_are_minilm_mean_pooled_by_hand(encoder):
    """The reference: plain transformers, one padded batch, the mean of the last token states
    weighted by the attention mask, cut at all-MiniLM-L6-v2's max_seq_length 256, torch's cosine."""
    path = rift.model_path(rift.DEFAULT_MODEL)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    by_hand = (hidden * mask).sum(1) / mask.sum(1)
    vectors = encoder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vectors, by_hand.numpy(), atol=1e-5)
    pairs = [(0, 1), (0, 2), (1, 3), (2, 4), (4, 4)]
    expected = [torch.nn.functional.cosine_similarity(by_hand[a], by_hand[b], dim=0).item() for a, b in pairs]
    got = similarity.cosine(vectors[[a for a, _ in pairs]], vectors[[b for _, b in pairs]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0] > got[1]  # a paraphrase is closer than an unrelated sentence


# ---------------------------------------------------------------------------------------------
# The window, against TextAttack's AttackedText.text_window_around_index restated


def textattack_words(text: str) -> list[str]:
    """TextAttack's words_from_text: per whitespace token, '-_*@ stripped from its ends, the runs
    of word characters and '-_*@ in it, each stripped again."""
    words = []
    for token in text.split():
        words += [w.strip("'-_*@") for w in re.findall(r"[\w'\-_*@]+", token.strip("'-_*@")) if w.strip("'-_*@")]
    return words


def textattack_window(text: str, index: int, window_size: float) -> str:
    """AttackedText.text_window_around_index with its word offsets (_text_index_of_word_index: each
    word found in turn in the lower-cased text), a window of float("inf") for none."""
    words = textattack_words(text)
    length = len(words)
    half_size = (window_size - 1) / 2.0
    if index - half_size < 0:
        start, end = 0, min(window_size - 1, length - 1)
    elif index + half_size >= length:
        start, end = max(0, length - window_size), length - 1
    else:
        start, end = index - math.ceil(half_size), index + math.floor(half_size)

    def offset(i: int) -> int:
        found = 0
        for word in words[:i + 1]:
            found = text.lower().find(word.lower(), found) + len(word)
        return found - len(words[i])
    return text[offset(start):offset(end) + len(words[end])]


WINDOW_TEXTS = ["the (well-made) film , it's fine -- really",
                "A man, in a red coat, is sleeping on the bench .\nNobody is awake ; really .",  # a pair, as TextAttack joins it
                "Good", "\"Brilliant!\" -- said no one, ever... 's all 90s-style fun @ home",
                " ".join(f"w{n}" for n in range(40))]


@pytest.mark.parametrize("text", WINDOW_TEXTS)
def test_the_window_is_textattacks_at_the_start_middle_and_end(text):
    n = len(textattack_words(text))
    assert [text[a:b] for a, b in similarity.word_offsets(text)] == textattack_words(text)
    for size in [*range(1, n + 3), 15, None]:
        for index in range(n):
            expected = textattack_window(text, index, float("inf") if size is None else size)
            assert similarity.text_window(text, index, size) == expected, (size, index)


def test_the_window_of_a_long_text_is_fifteen_words_around_the_word():
    text = " ".join(f"w{n}" for n in range(40))
    assert similarity.text_window(text, 20, 15) == " ".join(f"w{n}" for n in range(13, 28))
    assert similarity.text_window(text, 2, 15) == " ".join(f"w{n}" for n in range(15))
    assert similarity.text_window(text, 39, 15) == " ".join(f"w{n}" for n in range(25, 40))


# ---------------------------------------------------------------------------------------------
# The check inside the searches: a toy victim and a stand-in encoder


class KnownWords:
    """A stand-in sentence encoder: a text's embedding is (1 + its known words, 50 x its unknown
    words), so every text of known words is alike (cosine 1) and one with an unknown word is far
    from it. Keeps every text it embeds."""

    def __init__(self, known):
        self.known, self.texts = set(known), []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        words = [[w.lower() for w in textattack_words(text)] for text in texts]
        return np.array([[1 + sum(w in self.known for w in ws), 50 * sum(w not in self.known for w in ws)]
                         for ws in words], np.float32)


TOY = Example(("the", "movie", "is", "good"), 1)
TOY_SYNONYMS = {"good": ["fine", "awful"], "movie": ["film"]}
KNOWN = {"the", "movie", "is", "good", "fine", "film"}  # awful, and any character edit, is unknown


def toy_victim(tokenizer, weights: dict[str, list[float]]) -> attacking.Victim:
    """A bag of words that says 1 on the toy example, [CLS] pulling to 0 and `weights` by word."""
    weight = np.zeros((tokenizer.vocab_size, 2), np.float32)
    weight[tokenizer.cls_token_id] = [1, 0]
    for word, row in weights.items():
        weight[tokenizer.convert_tokens_to_ids(word)] = row
    return attacking.Victim(BagOfWords(weight), tokenizer, MAX_LENGTH)


def run(victim, search: str, meaning=None, example: Example = TOY, synonyms=TOY_SYNONYMS) -> attacking.AttackResult:
    [(_, result)] = attacking.attack_examples(victim, [example], search, dict_synonyms(synonyms), [0], meaning=meaning)
    return result


def record(result: attacking.AttackResult) -> dict:
    return result.record() | {"seconds": 0}


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_a_dissimilar_candidate_that_would_fool_the_model_is_never_scored(tokenizer, search):
    """Unchecked, each search fools the toy (awful, or a character edit of good); checked, the only
    candidates that fool it are too far from their reference: the search fails, and no text the
    model scored has a word the stand-in encoder does not know, the ranking's [UNK] aside."""
    weights = {"good": [0, 3], "fine": [0, 3], "awful": [3, 0]}
    assert run(toy_victim(tokenizer, weights), search).status == "successful"
    victim, encoder = toy_victim(tokenizer, weights), KnownWords(KNOWN)
    result = run(victim, search, similarity.MeaningCheck(encoder, 0.5, window=None))
    assert result.status == "failed" and "awful" not in result.perturbed
    assert encoder.texts, "the check embedded nothing"
    scored = {w for row in victim.model.rows for w in tokenizer.decode(row).split()}
    assert scored <= KNOWN | {"[CLS]", "[SEP]", "[UNK]"}, scored


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_a_threshold_of_zero_changes_nothing(tokenizer, search):
    weights = {"good": [0, 3], "fine": [0, 3], "awful": [3, 0]}
    plain = toy_victim(tokenizer, weights)
    checked, encoder = toy_victim(tokenizer, weights), KnownWords(KNOWN)
    assert record(run(checked, search, similarity.MeaningCheck(encoder, 0.0, window=None))) == record(run(plain, search))
    assert checked.model.rows == plain.model.rows and encoder.texts


def test_a_text_shorter_than_the_window_passes_unchecked(tokenizer):
    """TextAttack's skip_text_shorter_than_window: four words under a window of 15 are never
    embedded, and the dissimilar swap fools the model; without the skip, it is checked and refused."""
    weights = {"good": [0, 3], "fine": [0, 3], "awful": [3, 0]}
    encoder = KnownWords(KNOWN)
    result = run(toy_victim(tokenizer, weights), "pwws", similarity.MeaningCheck(encoder, 0.5))
    assert result.status == "successful" and result.perturbed == ("the", "movie", "is", "awful")
    assert encoder.texts == []
    refused = run(toy_victim(tokenizer, weights), "pwws", similarity.MeaningCheck(encoder, 0.5, skip_short=False))
    assert refused.status == "failed" and encoder.texts


def test_the_reference_is_the_current_text_or_the_original():
    """A candidate made from a text that already has film in it is compared with that text, or
    with the original: the windows the check asks to embed say which."""
    encoder = KnownWords(KNOWN)
    current, candidate = ("the", "film", "is", "good"), ("the", "film", "is", "awful")
    for reference, expected in (("current", "the film is good"), ("original", "the movie is good")):
        check = similarity.MeaningCheck(encoder, 0.5, window=None, reference=reference).keep(TOY)
        asking = check([(current, (3, 0), [candidate])])
        request = next(asking)
        assert request == attacking.Embed([expected, "the film is awful"])
        with pytest.raises(StopIteration) as done:
            asking.send(encoder.embed(request.texts))
        assert done.value.value[0][0] == []  # awful: too far from either


class Alike(KnownWords):
    """A stand-in encoder that finds every text the same (cosine 1)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return np.ones((len(texts), 2), np.float32)


def test_many_examples_checked_at_once_give_what_unchecked_searches_give(tokenizer):
    """Random toy cases and an encoder that finds every candidate as similar as can be: the
    checked searches give what the unchecked ones give, with the Embed requests of three examples
    at a time answered together."""
    for search in attacks.SEARCHES:
        cases = [random_case(tokenizer, seed) for seed in range(300, 306)]
        weight = cases[0][3]  # one model for all, each example labelled as it says
        labels = reference_logits(tokenizer, weight, [words for words, _, _, _ in cases]).argmax(1)
        examples = [Example(words, int(label)) for (words, _, _, _), label in zip(cases, labels)]
        table = {k: v for _, _, t, _ in cases for k, v in t.items()}
        results = []
        encoder = Alike(())
        for meaning in (None, similarity.MeaningCheck(encoder, 0.9, window=3, skip_short=False)):
            victim = attacking.Victim(BagOfWords(weight), tokenizer, MAX_LENGTH)
            done = dict(attacking.attack_examples(victim, examples, search, dict_synonyms(table), list(range(6)),
                                                at_once=3, meaning=meaning))
            results.append([record(done[n]) for n in range(6)])
        assert results[0] == results[1] and encoder.texts, search
        assert {r["status"] for r in results[0]} == {"successful", "failed"} or search == "deepwordbug", results[0]


def test_textattack_picks_the_most_similar_of_the_successes_ranked_first():
    goal = np.array([0.9, 0.8, 0.7, 0.6])
    assert attacks.most_similar_success(goal, np.array([True, True, False, True]), np.array([0.5, 0.9, 1.0, 1.0])) == 1
    assert attacks.most_similar_success(goal, np.array([True, True, True, True]), np.ones(4)) == 0
    # ranked by goal: 3, 2, 1, 0; of the two most similar (0 and 1), the better-scoring
    assert attacks.most_similar_success(goal[::-1].copy(), np.array([True] * 4), np.array([0.7, 0.7, 0.2, 0.2])) == 1


@pytest.mark.parametrize("search", ["pwws", "textfooler"])
def test_a_checked_search_returns_the_success_most_similar_to_its_reference(tokenizer, search):
    """awful and bad both fool the toy, awful more: unchecked, PWWS takes the best score and
    TextFooler the first neighbour (awful, in TextAttack's order); checked, both take bad, which
    the stand-in finds closer (as TextAttack's greedy search and the TextFooler paper pick)."""
    weights = {"good": [0, 3], "awful": [4, 0], "bad": [3, 0]}
    synonyms = {"good": ["awful", "bad"]}
    assert run(toy_victim(tokenizer, weights), search, synonyms=synonyms).perturbed[-1] == "awful"
    check = similarity.MeaningCheck(KnownWords(KNOWN | {"bad"}), 0.0, window=None)
    assert run(toy_victim(tokenizer, weights), search, check, synonyms=synonyms).perturbed[-1] == "bad"


# ---------------------------------------------------------------------------------------------
# The records: each success's similarity and share of changed words, their means


def test_each_success_records_its_similarity_and_changed_share():
    encoder = KnownWords({"the", "movie", "is", "good", "a", "film"})
    line = dict(attack="pwws", index=0, status="successful", original="the movie is good", perturbed="the movie is bad",
                changed=[3], words=4, queries=5, model_calls=5, recheck_mismatch=False, fp32_rerun=False)
    lines = [line, line | {"index": 1, "perturbed": "the film is good", "changed": [1]},
             line | {"index": 2, "status": "failed", "perturbed": "the movie is good", "changed": []},
             line | {"index": 3, "status": "skipped"},
             line | {"attack": "pgd eps=0.1", "perturbed": "the movie is good", "changed": []}]
    described = similarity.success_records(lines, encoder, ["pwws"])
    vectors = encoder.embed(["the movie is good", "the movie is bad", "the film is good"]).astype(np.float64)
    by_hand = [v @ vectors[0] / np.linalg.norm(v) / np.linalg.norm(vectors[0]) for v in vectors[1:]]
    assert [d["similarity"] for d in described] == pytest.approx([*by_hand, None, None, None])
    assert [d["changed_share"] for d in described] == [0.25, 0.25, None, None, None]
    assert [{k: v for k, v in d.items() if k not in ("similarity", "changed_share")} for d in described] == lines
    summary = attacking.summarize(described[:4])
    assert summary["mean_similarity"] == pytest.approx(np.mean(by_hand))
    assert summary["words_perturbed_pct"] == pytest.approx(25.0)  # the changed shares' mean, in percent
    assert attacking.summarize(lines[:4])["mean_similarity"] is None  # lines not yet described


# ---------------------------------------------------------------------------------------------
# The flags


@pytest.mark.parametrize("threshold", ["1.5", "-0.1", "nan"])
def test_a_similarity_threshold_outside_zero_to_one_is_a_usage_error(threshold):
    with pytest.raises(UsageError, match="--similarity .* between 0 and 1"):
        evaluate.load_meaning(evaluate.parse_args(["--similarity", threshold]), torch.device("cpu"))


def test_ascc_takes_no_meaning_check():
    with pytest.raises(UsageError, match="--attack ascc takes no meaning check"):
        evaluate.load_meaning(evaluate.parse_args(["--protocol", "textdefender", "--attack", "ascc"]), torch.device("cpu"))


def test_textdefender_protocol_sets_its_sentence_encoder_settings():
    args = evaluate.parse_args(["--protocol", "textdefender"])
    assert (args.similarity, args.similarity_metric, args.similarity_window, args.similarity_reference,
            args.similarity_skip_short) == (0.840845057, "angular", 15, "current", True)
    assert evaluate.parse_args([]).similarity is None  # off by default
    assert evaluate.parse_args(["--protocol", "textdefender", "--similarity", "0.7"]).similarity == 0.7
