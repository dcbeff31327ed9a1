"""attacks.py against a victim we control: a bag-of-words linear classifier over the tokenizer's ids.

Because its logits are a sum over the token ids of the text, a brute force over every combination
of substitutions (an independent reference, scored without attacks.py or rift.py) tells exactly
which examples can be flipped within the cap on changed words. The searches are checked against it
(minGPT-style parity), then the Victim's cache, query count and budget, the re-check of successes,
the summary metrics, accuracy_by_modify_rate, the substitution rules and pgd_accuracy."""

import itertools
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import attacks
import rift
from attacks import AttackResult, Victim
from data import Example

MAX_LENGTH = 64

# Content words (none is a stopword) from which random toy examples and synonym tables are drawn.
POOL = ("movie film picture flick story plot tale narrative acting performance cast good great superb "
        "excellent bad awful poor terrible dull boring tedious funny witty amusing clever smart bright dark "
        "grim bleak sweet charming lovely silly stupid ridiculous brilliant strong weak slow fast quick").split()
FILLERS = ["the", "a", "is", "and", "of", "was", ",", ".", "--", "it", "not"]  # stopwords and punctuation


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(rift.model_path(rift.DEFAULT_MODEL))


class BagOfWords(torch.nn.Module):
    """logits = sum of weight[id] over the (unpadded) token ids of the text. Records every row it
    scores, so a test can count what the model actually saw."""

    def __init__(self, weight: np.ndarray, batch_shift: np.ndarray | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weight, dtype=torch.float32))
        self.batch_shift = None if batch_shift is None else torch.tensor(batch_shift, dtype=torch.float32)
        self.config = SimpleNamespace(num_labels=weight.shape[1])
        self.rows, self.calls = [], []

    @property
    def device(self):
        return self.weight.device

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        for ids, m in zip(input_ids, mask):
            self.rows.append(tuple(ids[m.bool()].tolist()))
        self.calls.append(len(input_ids))
        logits = (self.weight[input_ids] * mask.unsqueeze(-1)).sum(1)
        if self.batch_shift is not None and len(input_ids) > 1:
            logits = logits + self.batch_shift  # a model whose output depends on the batch
        return SimpleNamespace(logits=logits)


def reference_logits(tokenizer, weight: np.ndarray, texts) -> np.ndarray:
    """The toy model's logits, computed without attacks.py, rift.py or data.py."""
    ids = tokenizer([" ".join(t) for t in texts])["input_ids"]
    return np.stack([weight[row].astype(np.float64).sum(0) for row in ids])


def dict_synonyms(table: dict):
    return lambda word: tuple(table.get(word, ()))


def expected_swaps(token: str, synonyms) -> list[str]:
    """An independent statement of the substitution rules: affixes kept, case copied, stopwords,
    punctuation and the word itself left out."""
    prefix, core, suffix = re.fullmatch(r"([^\w]*)(.*?)([^\w]*)", token).groups()
    if not any(ch.isalnum() for ch in core) or core.lower() in attacks.STOPWORDS:
        return []
    out = []
    for s in synonyms(core.lower()):
        if s == core.lower():
            continue
        cased = s.upper() if core.isupper() and len(core) > 1 else s.capitalize() if core[:1].isupper() else s
        out.append(prefix + cased + suffix)
    return out


def dress(word: str, rng) -> str:
    """A random casing and punctuation around a word."""
    word = [word, word.capitalize(), word.upper()][rng.integers(3)] if rng.random() < 0.4 else word
    return [word, word + ",", word + ".", "(" + word + ")", '"' + word + '",'][rng.integers(5)] if rng.random() < 0.4 else word


def random_case(tokenizer, seed: int, num_classes: int = 2):
    """A toy example with 3-5 substitutable positions of 1-3 synonyms each, a synonym table and a
    random bag-of-words model that classifies the example correctly."""
    rng = np.random.default_rng(seed)
    chosen = list(rng.choice(POOL, size=5 + 15, replace=False))
    bases, others = chosen[:int(rng.integers(3, 6))], chosen[5:]
    table, used = {}, 0
    for base in bases:
        n = int(rng.integers(1, 4))
        table[base] = tuple(others[used:used + n])
        used += n
    tokens = [dress(b, rng) for b in bases] + list(rng.choice(FILLERS, size=int(rng.integers(2, 7))))
    words = tuple(tokens[i] for i in rng.permutation(len(tokens)))
    weight = np.zeros((tokenizer.vocab_size, num_classes), dtype=np.float32)
    ids = {i for w in [*POOL, *FILLERS, tokenizer.unk_token] for i in tokenizer(w, add_special_tokens=False)["input_ids"]}
    for i in ids:
        weight[i] = rng.normal(0, 1.0, num_classes)
    label = int(reference_logits(tokenizer, weight, [words])[0].argmax())
    return words, label, table, weight


def brute_force(tokenizer, words, synonyms, weight, cap: int):
    """Every combination of substitutions with at most `cap` changes: (whether one flips the label,
    the smallest gap between the top two logits over all combinations, for leaving out near-ties)."""
    options = {i: expected_swaps(t, synonyms) for i, t in enumerate(words)}
    options = {i: o for i, o in options.items() if o}
    positions = list(options)
    texts = []
    for choice in itertools.product(*[[None, *options[i]] for i in positions]):
        changes = {i: c for i, c in zip(positions, choice) if c is not None}
        if len(changes) <= cap:
            texts.append(tuple(changes.get(i, w) for i, w in enumerate(words)))
    logits = reference_logits(tokenizer, weight, texts)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return logits, texts, float((top2[:, 1] - top2[:, 0]).min()), options


def word_count(words) -> int:
    return sum(any(ch.isalnum() for ch in w) for w in words)


# ---------------------------------------------------------------------------------------------
# Parity with the brute force


def run_trials(tokenizer, num_classes: int, seeds, rates=(0.1, 0.2, 0.3, 0.5, 1.0), searches=attacks.SEARCHES):
    """Yield (search, case, result, brute force) over random cases, every search, every rate."""
    for seed in seeds:
        words, label, table, weight = random_case(tokenizer, seed, num_classes)
        synonyms = dict_synonyms(table)
        rate = rates[seed % len(rates)]
        cap = math.floor(rate * word_count(words))
        logits, texts, gap, options = brute_force(tokenizer, words, synonyms, weight, cap)
        if gap < 1e-3:
            continue  # a near-tie: float32 and float64 could disagree on it
        flippable = bool((logits.argmax(1) != label).any())
        for search in searches:
            model = BagOfWords(weight)
            victim = Victim(model, tokenizer, MAX_LENGTH, batch_size=16)
            result = attacks.attack_example(victim, Example(words, label), search, synonyms, rate, None,
                                            np.random.default_rng(seed))
            yield search, SimpleNamespace(words=words, label=label, table=table, weight=weight, cap=cap,
                                          options=options, flippable=flippable, model=model, victim=victim), result


@pytest.mark.parametrize("num_classes", [2, 3])
def test_searches_never_claim_an_impossible_flip_and_every_success_is_real(tokenizer, num_classes):
    outcomes = {s: [0, 0] for s in attacks.SEARCHES}
    for search, case, result in run_trials(tokenizer, num_classes, range(40)):
        assert result.status in ("successful", "failed") and not result.recheck_mismatch
        assert result.original == case.words
        if result.status == "successful":
            assert case.flippable, (search, case.words, result.perturbed)
            assert reference_logits(tokenizer, case.weight, [result.perturbed])[0].argmax() != case.label
            assert int(np.argmax(result.probs_after)) != case.label
        else:
            assert reference_logits(tokenizer, case.weight, [result.perturbed])[0].argmax() == case.label
        assert len(result.changed) <= case.cap
        assert set(result.changed) <= set(case.options)
        for i in result.changed:
            assert result.perturbed[i] in case.options[i]
        outcomes[search][result.status == "successful"] += 1
    for search, (failed, succeeded) in outcomes.items():
        assert succeeded > 0 and failed > 0, (search, outcomes)  # the trials exercise both outcomes


def test_pwws_and_textfooler_find_every_flip_of_an_additive_binary_model_when_the_cap_allows_all_positions(tokenizer):
    """Binary and additive: applying every swap that lowers p(y) reaches the lowest p(y) of all
    combinations, and both greedy searches do just that when they may change every position."""
    checked = 0
    for search, case, result in run_trials(tokenizer, 2, range(100, 150), rates=(1.0,), searches=("pwws", "textfooler")):
        assert case.cap >= len(case.options)
        assert (result.status == "successful") == case.flippable, (search, case.words, case.table)
        checked += case.flippable
    assert checked >= 10


def test_genetic_finds_a_single_swap_flip_of_a_binary_model(tokenizer):
    """When one swap alone flips the label and the cap allows one change, the genetic attack's first
    mutation tries every synonym at 60 random positions (of at most 5) and keeps the fittest, so it
    finds the flip (missing a position has probability < 1e-5; the seeds are fixed). The greedy
    searches promise this only when the cap covers every position: with a smaller cap they may spend
    it on positions that lower p(y) without flipping."""
    checked = 0
    for seed in range(200, 260):
        words, label, table, weight = random_case(tokenizer, seed)
        synonyms = dict_synonyms(table)
        cap = math.floor(0.3 * word_count(words))
        logits, texts, gap, options = brute_force(tokenizer, words, synonyms, weight, 1)
        if gap < 1e-3 or cap < 1 or not (logits.argmax(1) != label).any():
            continue
        victim = Victim(BagOfWords(weight), tokenizer, MAX_LENGTH)
        result = attacks.attack_example(victim, Example(words, label), "genetic", synonyms, 0.3, None,
                                        np.random.default_rng(seed))
        assert result.status == "successful", (words, table)
        checked += 1
    assert checked >= 10


# ---------------------------------------------------------------------------------------------
# Constraints on what the searches produce


class RecordingVictim(Victim):
    def start(self, example, budget):
        super().start(example, budget)
        self.batches = []

    def probs(self, texts):
        self.batches.append(list(texts))
        return super().probs(texts)


def test_pwws_and_textfooler_change_each_position_at_most_once(tokenizer):
    for seed in range(300, 330):
        words, label, table, weight = random_case(tokenizer, seed)
        synonyms = dict_synonyms(table)
        options = attacks.substitutions(words, synonyms)
        for search in ("pwws", "textfooler"):
            victim = RecordingVictim(BagOfWords(weight), tokenizer, MAX_LENGTH)
            attacks.attack_example(victim, Example(words, label), search, synonyms, 1.0, None, np.random.default_rng(0))
            # batches: [the example] for attack_example, then the search's own [the example],
            # then the ranking (PWWS: unknown words and all swaps; TextFooler: deletions)
            steps = victim.batches[3:]
            if search == "pwws":
                path = [frozenset(attacks.changed_positions(words, b[0])) for b in steps]
                assert all(len(b) == 1 for b in steps)
                previous = frozenset()
                for changed in path:  # each step adds one position never changed before
                    assert previous < changed and len(changed - previous) == 1
                    previous = changed
            else:
                visited = set()
                for batch in steps:  # the candidates at one position: a new one, after committed ones
                    differs = {frozenset(attacks.changed_positions(words, t)) for t in batch}
                    assert len(differs) == 1, batch
                    new = set(next(iter(differs))) - visited
                    assert len(new) == 1, (batch, visited)
                    i = new.pop()
                    assert all(t[i] in options[i] for t in batch)
                    visited.add(i)


def test_changed_words_are_synonyms_with_case_and_punctuation_kept_and_within_the_cap(tokenizer):
    table = {"movie": ("film", "picture"), "good": ("great", "fine"), "brilliant": ("superb",),
             "acting": ("performance",), "plot": ("story", "tale"), "the": ("thee",), "not": ("nay",)}
    synonyms = dict_synonyms(table)
    words = ("The", "MOVIE", "was", "Good,", "not", "(brilliant)", ",", "the", "acting", "--", "and", "plot.")
    seen_changes = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        weight = np.zeros((tokenizer.vocab_size, 2), dtype=np.float32)
        for w in ["movie", "film", "picture", "good", "great", "fine", "brilliant", "superb", "acting",
                  "performance", "plot", "story", "tale", "the", "thee", "not", "nay", "[UNK]"]:
            weight[tokenizer.convert_tokens_to_ids(w)] = rng.normal(0, 1, 2)
        label = int(reference_logits(tokenizer, weight, [words])[0].argmax())
        for search in attacks.SEARCHES:
            for rate in (0.25, 1.0):
                victim = Victim(BagOfWords(weight), tokenizer, MAX_LENGTH)
                result = attacks.attack_example(victim, Example(words, label), search, synonyms, rate, None,
                                                np.random.default_rng(seed))
                assert result.words == 10  # "," and "--" are not words
                assert len(result.changed) <= math.floor(rate * 10)
                assert result.changed == [i for i in range(len(words)) if result.perturbed[i] != words[i]]
                for i in result.changed:
                    assert result.perturbed[i] in expected_swaps(words[i], synonyms), (words[i], result.perturbed[i])
                    assert words[i] not in ("The", "was", "not", ",", "the", "--", "and")
                seen_changes += len(result.changed)
    assert seen_changes > 0


# ---------------------------------------------------------------------------------------------
# Queries, cache, budget


def test_victim_counts_each_distinct_text_once_and_cache_hits_not_at_all(tokenizer):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(tokenizer.vocab_size, 2)).astype(np.float32)
    model = BagOfWords(weight)
    victim = Victim(model, tokenizer, MAX_LENGTH, batch_size=2)
    a, b, c, d = ("a", "good", "film"), ("a", "bad", "film"), ("dull",), ("a", "great", "movie", "indeed")
    victim.start(Example(a, 0), budget=100)
    p = victim.probs([a, b, a])
    assert p.shape == (3, 2) and np.array_equal(p[0], p[2])
    assert victim.queries == 2 and len(model.rows) == 2
    p2 = victim.probs([b, c, a, d])
    assert victim.queries == 4 and len(model.rows) == 4  # only c and d were new
    assert np.array_equal(p2[0], p[1])
    expected = torch.tensor(reference_logits(tokenizer, weight, [a, b, c, d])).softmax(-1).numpy()
    np.testing.assert_allclose(np.stack([p[0], p[1], p2[1], p2[3]]), expected, rtol=1e-4, atol=1e-5)
    assert len(set(model.rows)) == 4
    victim.start(Example(a, 0), budget=100)  # a new example: a fresh cache
    victim.probs([a])
    assert victim.queries == 1 and len(model.rows) == 5


def test_victim_returns_the_affordable_prefix_and_never_exceeds_the_budget(tokenizer):
    model = BagOfWords(np.random.default_rng(1).normal(size=(tokenizer.vocab_size, 3)).astype(np.float32))
    victim = Victim(model, tokenizer, MAX_LENGTH)
    texts = [("word", str(n)) for n in range(6)]
    victim.start(Example(texts[0], 0), budget=3)
    assert victim.probs(texts).shape == (3, 3)
    assert victim.queries == 3 and len(model.rows) == 3 and victim.exhausted
    assert victim.probs([texts[1], texts[4], texts[0]]).shape == (1, 3)  # texts[4] is unaffordable
    assert victim.probs([texts[4], texts[0]]).shape == (0, 3)
    assert victim.probs([texts[2], texts[0]]).shape == (2, 3)  # cached texts stay free
    assert victim.queries == 3 and len(model.rows) == 3


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_attack_queries_are_the_texts_the_model_scored_and_stay_within_the_budget(tokenizer, search):
    for seed in range(400, 412):
        words, label, table, weight = random_case(tokenizer, seed)
        for budget in (None, 7):
            model = BagOfWords(weight)
            victim = Victim(model, tokenizer, MAX_LENGTH, batch_size=4)
            result = attacks.attack_example(victim, Example(words, label), search, dict_synonyms(table), 1.0,
                                            budget, np.random.default_rng(seed))
            rechecked = result.status == "successful" or result.recheck_mismatch
            searched = model.rows[:len(model.rows) - rechecked]
            assert result.queries == victim.queries == len(searched) == len(set(searched))
            assert result.queries <= (budget or 50 * word_count(words))
            if rechecked:
                assert model.calls[-1] == 1 and model.rows[-1] in searched  # one plain pass of a scored text


def test_skipped_example_costs_one_query_and_is_not_attacked(tokenizer):
    words, label, table, weight = random_case(tokenizer, 7)
    model = BagOfWords(weight)
    result = attacks.attack_example(Victim(model, tokenizer, MAX_LENGTH), Example(words, 1 - label), "pwws",
                                    dict_synonyms(table), 1.0, None, np.random.default_rng(0))
    assert result.status == "skipped" and result.queries == 1 and len(model.rows) == 1
    assert result.perturbed == words and result.changed == []


# ---------------------------------------------------------------------------------------------
# The re-check of successes


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_success_that_depends_on_batching_is_marked_a_recheck_mismatch(tokenizer, search):
    table = {"movie": ("film", "picture"), "good": ("great", "fine"), "plot": ("story", "tale")}
    words = ("a", "good", "movie", "with", "a", "plot")
    weight = np.zeros((tokenizer.vocab_size, 2), dtype=np.float32)
    weight[tokenizer.convert_tokens_to_ids("a"), 0] = 1.0  # alone, every text is class 0 by a margin of 2
    model = BagOfWords(weight, batch_shift=np.array([-5.0, 5.0]))  # in a batch of several: class 1
    victim = Victim(model, tokenizer, MAX_LENGTH)
    result = attacks.attack_example(victim, Example(words, 0), search, dict_synonyms(table), 1.0, None,
                                    np.random.default_rng(0))
    assert result.recheck_mismatch and result.status == "failed"
    assert int(np.argmax(result.probs_after)) == 0  # the plain pass's probabilities are reported
    summary = attacks.summarize([result])
    assert summary["recheck_mismatches"] == 1 and summary["failed"] == 1 and summary["successful"] == 0


def test_summary_of_a_normal_model_has_no_recheck_mismatch(tokenizer):
    results = [r for _, _, r in run_trials(tokenizer, 2, range(500, 510))]
    summary = attacks.summarize(results)
    assert summary["recheck_mismatches"] == 0 and summary["successful"] > 0


# ---------------------------------------------------------------------------------------------
# summarize and accuracy_by_modify_rate


def make_result(status, changed, words, queries, seconds=1.0, mismatch=False):
    original = tuple(f"w{i}" for i in range(words))
    return AttackResult(status, 0, original, original, changed, words, [0.9, 0.1], [0.2, 0.8], queries, seconds,
                        None, mismatch)


def test_summarize_by_hand():
    results = [make_result("successful", [0], 4, 10, 1.0),          # 1/4 of the words
               make_result("successful", [1, 2, 3], 6, 20, 2.0),    # 3/6
               make_result("failed", [], 5, 30, 3.0),
               make_result("failed", [1], 5, 40, 4.0, mismatch=True),
               make_result("skipped", [], 8, 1, 5.0)]
    s = attacks.summarize(results)
    assert s["examples"] == 5 and (s["successful"], s["failed"], s["skipped"]) == (2, 2, 1)
    assert s["clean_accuracy"] == pytest.approx(4 / 5)
    assert s["accuracy_under_attack"] == pytest.approx(2 / 5)
    assert s["attack_success_rate"] == pytest.approx(2 / 4)
    assert s["words_perturbed_pct"] == pytest.approx(100 * (1 / 4 + 3 / 6) / 2)
    assert s["avg_queries"] == pytest.approx((10 + 20 + 30 + 40) / 4)  # skipped ones are not attacked
    assert s["recheck_mismatches"] == 1
    assert s["seconds_per_example"] == pytest.approx(3.0)


def test_summarize_of_nothing_attacked():
    s = attacks.summarize([make_result("skipped", [], 4, 1)])
    assert s["clean_accuracy"] == 0 and s["accuracy_under_attack"] == 0
    assert s["attack_success_rate"] == 0 and s["words_perturbed_pct"] == 0 and s["avg_queries"] == 0
    assert attacks.summarize([])["examples"] == 0


def test_accuracy_by_modify_rate_by_hand_and_at_the_full_rate_equals_the_summary():
    results = [make_result("successful", [0], 10, 5),           # 1 change of 10 words
               make_result("successful", [0, 1, 2], 10, 5),     # 3 of 10
               make_result("successful", [0, 1], 4, 5),         # 2 of 4
               make_result("failed", [], 10, 5),
               make_result("skipped", [], 10, 1)]
    records = [{"status": r.status, "changed": r.changed, "words": r.words} for r in results]
    # rate 0: no change allowed, every success is undone: 3 successes + 1 failure robust
    # rate 0.1: floor(1)=1 of 10, floor(0.4)=0 of 4: the first success stands
    # rate 0.25: 2 of 10, 1 of 4: the first stands; rate 0.3: 3 of 10 and 1 of 4: two stand
    # rate 0.5: all three stand
    assert attacks.accuracy_by_modify_rate(records, [0.0, 0.1, 0.25, 0.3, 0.5]) == \
        pytest.approx([4 / 5, 3 / 5, 3 / 5, 2 / 5, 1 / 5])
    assert attacks.accuracy_by_modify_rate(records, [0.5])[0] == attacks.summarize(results)["accuracy_under_attack"]


def test_accuracy_by_modify_rate_at_the_attack_rate_matches_real_attacks(tokenizer):
    results = [r for _, _, r in run_trials(tokenizer, 2, range(600, 615), rates=(0.3,))]
    records = [{"status": r.status, "changed": r.changed, "words": r.words} for r in results]
    assert attacks.accuracy_by_modify_rate(records, [0.3]) == [attacks.summarize(results)["accuracy_under_attack"]]


@pytest.mark.parametrize("search", ["pwws", "textfooler"])
def test_accuracy_by_modify_rate_is_exact_for_the_greedy_searches(tokenizer, search):
    """The docstring's claim: for the greedy searches a lower cap only cuts the path short."""
    for seed in range(700, 730):
        words, label, table, weight = random_case(tokenizer, seed)
        if word_count(words) < 5:
            continue
        full = attacks.attack_example(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, label),
                                      search, dict_synonyms(table), 1.0, None, np.random.default_rng(0))
        for rate in (0.2, 0.4):
            capped = attacks.attack_example(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, label),
                                            search, dict_synonyms(table), rate, None, np.random.default_rng(0))
            record = {"status": full.status, "changed": full.changed, "words": full.words}
            assert attacks.accuracy_by_modify_rate([record], [rate])[0] == (capped.status == "failed")


# ---------------------------------------------------------------------------------------------
# Where a text may change


def test_match_case_copies_the_casing():
    assert attacks.match_case("film", "Movie") == "Film"
    assert attacks.match_case("film", "MOVIE") == "FILM"
    assert attacks.match_case("film", "movie") == "film"
    assert attacks.match_case("film", "M") == "Film"  # one capital is a capitalised word, not an acronym


def test_affixes_split_surrounding_punctuation():
    assert attacks.AFFIXES.match("(brilliant,").groups() == ("(", "brilliant", ",")
    assert attacks.AFFIXES.match("Good,").groups() == ("", "Good", ",")
    assert attacks.AFFIXES.match("--").groups()[1] == ""
    assert attacks.AFFIXES.match("plain").groups() == ("", "plain", "")


def test_substitutions_keep_case_and_punctuation_and_skip_stopwords_and_punctuation():
    table = {"movie": ("film", "movie", "picture"), "good": ("great",), "brilliant": ("superb",),
             "the": ("thee",), "not": ("nay",), "was": ("existed",), "plot": ()}
    words = ("The", "Movie", "was", "GOOD", ",", "(brilliant,", "--", "not", "plot", "Good,", "...")
    assert attacks.substitutions(words, dict_synonyms(table)) == {
        1: ["Film", "Picture"], 3: ["GREAT"], 5: ["(superb,"], 9: ["Great,"]}


def test_substitutions_never_touch_clitics_that_are_stopwords():
    """STOPWORDS lists the clitics 's 'm 'd 've 'll (SST-2 and PTB text split them off: "it 's"),
    but substitutions strips the apostrophe before the stopword check, so "'s" is looked up as
    "s": with WordNet, "it 's good" becomes "it 'second good" or "it 'sulfur good"."""
    table = {"s": ("second", "sulfur"), "m": ("meter",), "d": ("calciferol",), "good": ("great",)}
    words = ("it", "'s", "good", ",", "i", "'m", "sure", "you", "'d", "agree")
    assert attacks.substitutions(words, dict_synonyms(table)) == {2: ["great"]}


# ---------------------------------------------------------------------------------------------
# Embedding-space PGD as an evaluation


def test_pgd_accuracy_at_eps_zero_is_clean_accuracy_and_gives_one_bool_per_example(tiny_model):
    model, tokenizer = rift.load_classifier(str(tiny_model), num_labels=2)
    torch.manual_seed(0)
    sentences = ["a good film", "dull and slow", "it is fine , i guess", "one of the best of the year",
                 "an awful mess", "not bad at all", "brilliant"]
    examples = [Example(tuple(s.split()), 0) for s in sentences]
    predicted = rift.predict_proba(model, tokenizer, examples, 32).argmax(-1).tolist()
    # half right, half wrong, so clean accuracy is not all or nothing
    labelled = [Example(ex.words, p if n % 2 == 0 else 1 - p) for n, (ex, p) in enumerate(zip(examples, predicted))]
    clean = attacks.pgd_accuracy(model, tokenizer, labelled, 32, 0.0, 3, "l2", batch_size=3)
    assert clean == [n % 2 == 0 for n in range(len(labelled))]
    for norm in ("l2", "linf"):
        robust = attacks.pgd_accuracy(model, tokenizer, labelled, 32, 2.0, 2, norm, batch_size=4)
        assert len(robust) == len(labelled) and all(type(r) is bool for r in robust)
