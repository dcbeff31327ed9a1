"""attacks.py against a victim we control: a bag-of-words linear classifier over the tokenizer's ids.

Because its logits are a sum over the token ids of the text, a brute force over every combination
of substitutions (an independent reference, scored without attacks.py or rift.py) tells exactly
which examples can be flipped within the cap on changed words. The searches are checked against it
(minGPT-style parity), PWWS against a plain restatement of TextAttack's greedy search, many
examples at once against one at a time, the truncation window, then the per-example cache, query
count and budget, the re-checks of successes (batching, bf16), the summary metrics,
accuracy_by_modify_rate, the word and substitution rules, PGD as an attack, and the one contract
every attack keeps."""

import functools
import itertools
import math
import random
import re
import string
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import adversaries
import attacking
import attacks
import rift
from attacking import Tally, Victim
from data import Example
from synonyms import NLTK_STOPWORDS

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

    def __init__(self, weight: np.ndarray, batch_shift: np.ndarray | None = None, bf16_shift: np.ndarray | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weight, dtype=torch.float32))
        self.batch_shift = None if batch_shift is None else torch.tensor(batch_shift, dtype=torch.float32)
        self.bf16_shift = None if bf16_shift is None else torch.tensor(bf16_shift, dtype=torch.float32)
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
        if self.bf16_shift is not None and torch.is_autocast_enabled("cpu"):
            logits = logits + self.bf16_shift  # a model whose output depends on the precision
        return SimpleNamespace(logits=logits)


def reference_logits(tokenizer, weight: np.ndarray, texts) -> np.ndarray:
    """The toy model's logits, computed without attacks.py, rift.py or data.py."""
    ids = tokenizer([" ".join(t) for t in texts])["input_ids"]
    return np.stack([weight[row].astype(np.float64).sum(0) for row in ids])


def dict_synonyms(table: dict):
    return lambda word: tuple(table.get(word, ()))


def ta_words(token: str) -> list[str]:
    """TextAttack's words_from_text on one token, restated: strip '-_*@ from the ends, take the runs
    of word characters and '-_*@, strip each again."""
    token = token.strip("'-_*@")
    return [w.strip("'-_*@") for w in re.findall(r"[\w'\-_*@]+", token) if w.strip("'-_*@")]


def expected_swaps(token: str, synonyms) -> list[str]:
    """An independent statement of the substitution rules for a token of one word: punctuation kept,
    NLTK stopwords (as spelled) and the word itself left out, no change of case."""
    words = ta_words(token)
    if len(words) != 1 or words[0] in NLTK_STOPWORDS:
        return []
    start = token.index(words[0])
    return [token[:start] + s + token[start + len(words[0]):] for s in synonyms(words[0]) if s != words[0]]


def attack_one(victim, example, search, synonyms, rate=1.0, budget=None, seed=0, **search_options):
    """One example's result through attack_examples, as evaluate.py runs it."""
    [(_, result)] = attacking.attack_examples(victim, [example], search, synonyms, [seed], max_modify_rate=rate,
                                            query_budget=budget, **search_options)
    return result


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
    return sum(len(ta_words(w)) for w in words)


# ---------------------------------------------------------------------------------------------
# Parity with the brute force


SYNONYM_SEARCHES = [search for search in attacks.SEARCHES if search != "deepwordbug"]  # its edits are no synonyms


def run_trials(tokenizer, num_classes: int, seeds, rates=(0.1, 0.2, 0.3, 0.5, 1.0), searches=SYNONYM_SEARCHES):
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
            result = attack_one(victim, Example(words, label), search, synonyms, rate, seed=seed)
            yield search, SimpleNamespace(words=words, label=label, table=table, weight=weight, cap=cap,
                                          options=options, flippable=flippable, model=model, victim=victim), result


@pytest.mark.parametrize("num_classes", [2, 3])
def test_searches_never_claim_an_impossible_flip_and_every_success_is_real(tokenizer, num_classes):
    outcomes = {s: [0, 0] for s in SYNONYM_SEARCHES}
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
        changed = [i for i, (a, b) in enumerate(zip(case.words, result.perturbed)) if a != b]
        assert len(changed) == len(result.changed) and set(changed) <= set(case.options)
        for i in changed:
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
        result = attack_one(victim, Example(words, label), "genetic", synonyms, 0.3, seed=seed)
        assert result.status == "successful", (words, table)
        checked += 1
    assert checked >= 10


# ---------------------------------------------------------------------------------------------
# PWWS is TextAttack's search


def textattack_options(words, synonyms) -> dict[int, list[str]]:
    """TextAttack's indices_to_order and their swaps: every token holding one non-stopword word,
    with or without synonyms ("Sweet," may hold no table entry: it is still ranked)."""
    return {i: expected_swaps(w, synonyms) for i, w in enumerate(words)
            if len(ta_words(w)) == 1 and ta_words(w)[0] not in NLTK_STOPWORDS}


def textattack_pwws(tokenizer, weight, words, label, options, budget=None):
    """GreedyWordSwapWIR("weighted-saliency") restated from TextAttack's source on the toy model,
    without attacks.py, with its query count (GoalFunction.get_results: each list cut to what is
    left of the budget, every text of it counted, cached or not, the original's first query too;
    the search is over once the count reaches the budget): (perturbed text, whether it succeeded,
    queries). options: position -> swaps; a position without swaps is made [UNK] all the same."""
    queries = 1  # init_attack_example: the original's verdict

    def goal(texts):
        nonlocal queries
        texts = texts if budget is None else texts[:budget - queries]
        queries += len(texts)
        logits = reference_logits(tokenizer, weight, texts) if texts else np.zeros((0, weight.shape[1]))
        p = np.exp(logits - logits.max(1, keepdims=True))
        return 1 - (p / p.sum(1, keepdims=True))[:, label], logits.argmax(1), queries == budget

    def swapped(text, i, token):
        return text[:i] + (token,) + text[i + 1:]

    def score(text):  # the goal score without a query: TextAttack holds the original's result
        logits = reference_logits(tokenizer, weight, [text])[0]
        return 1 - np.exp(logits[label] - logits.max()) / np.exp(logits - logits.max()).sum()

    indices = sorted(options)
    saliency, _, over = goal([swapped(words, i, words[i].replace(ta_words(words[i])[0], "[UNK]")) for i in indices])
    delta = []
    for i in indices:
        if over:
            return words, False, queries
        if options[i]:
            scores, _, over = goal([swapped(words, i, c) for c in options[i]])
            delta.append(scores.max())
        else:
            delta.append(0.0)
    if over:
        return words, False, queries
    weights = torch.softmax(torch.tensor(saliency, dtype=torch.float32), 0).numpy()
    current, current_score = words, score(words)
    for i in np.array(indices)[(-(weights * np.array(delta))).argsort()]:
        if over:
            break
        candidates = sorted((swapped(current, i, c) for c in options[i]), key=" ".join)
        if not candidates:
            continue
        scores, predicted, over = goal(candidates)
        best = int(np.argmax(scores))
        if scores[best] > current_score:
            current, current_score = candidates[best], scores[best]
            if predicted[best] != label:
                return current, True, queries
    return current, False, queries


def test_pwws_takes_textattacks_path_on_random_cases(tokenizer):
    """The same texts, step for step, and the same query count: ranking by softmax(saliency) x
    best swap's goal score, then greedy on the current text, best-scoring swap kept only when it
    beats the current score."""
    compared = 0
    for seed in range(800, 860):
        words, label, table, weight = random_case(tokenizer, seed, num_classes=2 + seed % 2)
        options = textattack_options(words, dict_synonyms(table))
        expected, succeeded, queries = textattack_pwws(tokenizer, weight, words, label, options)
        result = attack_one(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, label), "pwws",
                            dict_synonyms(table))
        assert result.perturbed == expected, (words, table)
        assert (result.status == "successful") == succeeded
        assert result.queries == queries
        compared += 1
    assert compared == 60


def test_a_query_budget_cuts_pwws_where_textattack_would(tokenizer):
    """Every budget from 1 to beyond the search's need, as N and as Nx: the same text, outcome and
    count as TextAttack's search under that budget."""
    for seed in range(860, 872):
        words, label, table, weight = random_case(tokenizer, seed)
        options = textattack_options(words, dict_synonyms(table))
        *_, needed = textattack_pwws(tokenizer, weight, words, label, options)
        budgets = [(n, n) for n in range(1, needed + 2)] + [(f"{k}x", k * word_count(words)) for k in (1, 2, 3, 5)]
        for budget, texts in budgets:
            expected, succeeded, queries = textattack_pwws(tokenizer, weight, words, label, options, texts)
            result = attack_one(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, label), "pwws",
                                dict_synonyms(table), budget=budget)
            assert (result.perturbed, result.status == "successful", result.queries) == (expected, succeeded, queries), \
                (seed, budget)


def test_pwws_queries_by_hand():
    """ "good movie plot", label 0, swaps good -> fine | great and movie -> film, plot none; only
    "great" moves the model (to class 1). TextAttack's count: the original 1, [UNK] for each of the
    three words 3 (plot too), the three swaps 3, then the greedy step on "good", its two swaps
    again (cache hits, counted): 9. The model scores 8 texts: the original, 6 ranking texts, and
    the success re-checked alone. Budgets: 9 (= 3x) reaches the flip; 8 cuts the greedy step after
    "fine movie plot", which still beats the original, so it is kept and the search ends; 6 (= 2x)
    cuts the ranking: the original, failed."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(rift.model_path(rift.DEFAULT_MODEL))
    weight = np.zeros((tokenizer.vocab_size, 2), dtype=np.float32)
    weight[tokenizer.convert_tokens_to_ids("good"), 0] = 1.0
    weight[tokenizer.convert_tokens_to_ids("great"), 1] = 5.0
    table = dict_synonyms({"good": ("great", "fine"), "movie": ("film",)})
    example = Example(("good", "movie", "plot"), 0)
    outcomes = {}
    for budget in (None, 9, "3x", 8, 7, 6, "2x"):
        model = BagOfWords(weight)
        result = attack_one(Victim(model, tokenizer, MAX_LENGTH), example, "pwws", table, budget=budget)
        outcomes[budget] = (result.status, " ".join(result.perturbed), result.queries, result.model_calls)
    assert outcomes[None] == outcomes[9] == outcomes["3x"] == ("successful", "great movie plot", 9, 8)
    assert outcomes[8] == ("failed", "fine movie plot", 8, 7)  # 1 + 6 ranking texts: "fine" was cached
    assert outcomes[7] == ("failed", "good movie plot", 7, 7)  # the ranking, exactly: no greedy step left
    assert outcomes[6] == outcomes["2x"] == ("failed", "good movie plot", 6, 6)


def test_many_examples_at_once_give_the_results_of_one_at_a_time(tokenizer):
    """Each search advances when the model answers it, whatever else shares the batch."""
    cases = [random_case(tokenizer, seed) for seed in range(900, 940)]
    weight = cases[0][3]
    for words, label, table, case_weight in cases[1:]:  # one model that knows every case's words
        weight = np.where(weight != 0, weight, case_weight)
    examples = [Example(words, int(reference_logits(tokenizer, weight, [words])[0].argmax()) if n % 5 else 1)
                for n, (words, *_) in enumerate(cases)]
    table = {k: v for *_, t, _ in cases for k, v in t.items()}
    for search in attacks.SEARCHES:
        runs = {}
        for at_once in (1, 7, 40):
            model = BagOfWords(weight)
            done = attacking.attack_examples(Victim(model, tokenizer, MAX_LENGTH, batch_size=16), examples, search,
                                           dict_synonyms(table), list(range(len(examples))), at_once=at_once,
                                           **({"population": 8, "generations": 5} if search == "genetic" else {}))
            results = dict(done)
            runs[at_once] = [(r.status, r.perturbed, r.changed, r.queries) for _, r in sorted(results.items())]
            if at_once == 7:
                assert max(model.calls) == 16  # the batches were filled from several examples
        assert runs[1] == runs[7] == runs[40]
        assert {status for status, *_ in runs[1]} == {"successful", "failed", "skipped"}


def test_no_query_touches_a_word_past_the_truncation_window(tokenizer):
    """A word the model never sees cannot change its prediction: no text that changes only such
    words is scored, and the result is the one the same search reaches on the visible words."""
    pool = [w for w in POOL if len(tokenizer.tokenize(w)) == 1]  # one token per word: 10 words fill 12 tokens
    table = {w: (pool[(n + 7) % len(pool)], pool[(n + 13) % len(pool)]) for n, w in enumerate(pool)}
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(tokenizer.vocab_size, 2)).astype(np.float32)
    for seed in range(10):
        words = tuple(str(w) for w in np.random.default_rng(seed).choice(pool, size=30))
        label = int(reference_logits(tokenizer, weight, [words])[0].argmax())
        model = BagOfWords(weight)
        victim = Victim(model, tokenizer, max_length=12, batch_size=16)  # [CLS] + 10 words + [SEP]
        assert attacking.visible_tokens(tokenizer, Example(words, label), 12) == 10
        result = attack_one(victim, Example(words, label), "pwws", dict_synonyms(table))
        assert all(len(row) <= 12 for row in model.rows)
        visible_only = attack_one(Victim(BagOfWords(weight), tokenizer, max_length=12), Example(words[:10], label),
                                  "pwws", dict_synonyms(table))
        assert result.perturbed[:10] == visible_only.perturbed and result.perturbed[10:] == words[10:]
        assert result.status == visible_only.status
        assert result.queries == visible_only.queries  # the hidden words cost nothing


def test_visible_tokens_counts_the_words_a_sentence_pair_keeps(tokenizer):
    words = tuple("a b c d e f g h".split())
    assert attacking.visible_tokens(tokenizer, Example(words, 0), 12) == 8  # 10 tokens: nothing cut
    assert attacking.visible_tokens(tokenizer, Example(words + ("i", "j", "k"), 0), 12) == 10
    # truncation=True cuts the longer of the pair first: context "x y z" keeps 3, the text 6
    assert attacking.visible_tokens(tokenizer, Example(words + ("i", "j", "k"), 0, context="x y z"), 12) == 6
    assert attacking.visible_tokens(tokenizer, Example(("a", "b,c", "d"), 0), 4) == 2  # "b,c" is partly seen


# ---------------------------------------------------------------------------------------------
# Constraints on what the searches produce


def test_changed_words_are_synonyms_with_punctuation_kept_and_within_the_cap(tokenizer):
    table = {"movie": ("film", "picture"), "MOVIE": ("FILM",), "good": ("great", "fine"), "Good": ("Great",),
             "brilliant": ("superb",), "acting": ("performance",), "plot": ("story", "tale"), "the": ("thee",),
             "not": ("nay",), "The": ("Thee",)}
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
        for search in SYNONYM_SEARCHES:
            for rate in (0.25, 1.0):
                victim = Victim(BagOfWords(weight), tokenizer, MAX_LENGTH)
                result = attack_one(victim, Example(words, label), search, synonyms, rate, seed=seed)
                assert result.words == 10  # "," and "--" hold no word
                assert len(result.changed) <= math.floor(rate * 10)
                changed = [i for i in range(len(words)) if result.perturbed[i] != words[i]]
                assert len(changed) == len(result.changed)
                for i in changed:
                    assert result.perturbed[i] in expected_swaps(words[i], synonyms), (words[i], result.perturbed[i])
                    assert words[i] not in ("was", "not", ",", "the", "--", "and")  # "The" is no NLTK stopword
                seen_changes += len(result.changed)
    assert seen_changes > 0


# ---------------------------------------------------------------------------------------------
# Queries, cache, budget


def drive(tally: Tally, model, tokenizer, texts, amp=False):
    """Answer one Tally.score the way attack_examples does; returns its result."""
    job = tally.score(texts, amp)
    try:
        request = next(job)
    except StopIteration as done:
        return done.value
    probs = Victim(model, tokenizer, MAX_LENGTH).score([Example(t, 0) for t in request.texts], request.texts, amp, 4)
    try:
        job.send(probs)
    except StopIteration as done:
        return done.value


def test_tally_counts_every_text_handed_in_and_scores_each_distinct_text_once(tokenizer):
    """TextAttack's count: every text of every list, cached or not; model_calls: only the new ones."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(tokenizer.vocab_size, 2)).astype(np.float32)
    model = BagOfWords(weight)
    tally = Tally(None, 2)
    a, b, c, d = ("a", "good", "film"), ("a", "bad", "film"), ("dull",), ("a", "great", "movie", "indeed")
    p = drive(tally, model, tokenizer, [a, b, a])
    assert p.shape == (3, 2) and np.array_equal(p[0], p[2])
    assert (tally.queries, tally.model_calls) == (3, 2) and len(model.rows) == 2
    p2 = drive(tally, model, tokenizer, [b, c, a, d])
    assert (tally.queries, tally.model_calls) == (7, 4) and len(model.rows) == 4  # only c and d were new
    assert np.array_equal(p2[0], p[1])
    expected = torch.tensor(reference_logits(tokenizer, weight, [a, b, c, d])).softmax(-1).numpy()
    np.testing.assert_allclose(np.stack([p[0], p[1], p2[1], p2[3]]), expected, rtol=1e-4, atol=1e-5)
    assert len(drive(tally, model, tokenizer, [a], amp=True)) == 1 and tally.model_calls == 5  # bf16 is another cache


def test_tally_cuts_each_list_to_what_is_left_of_the_budget_cached_or_not(tokenizer):
    model = BagOfWords(np.random.default_rng(1).normal(size=(tokenizer.vocab_size, 3)).astype(np.float32))
    tally = Tally(5, 3)
    texts = [("word", str(n)) for n in range(6)]
    assert drive(tally, model, tokenizer, texts[:3]).shape == (3, 3)
    assert drive(tally, model, tokenizer, [texts[1], texts[4], texts[0]]).shape == (2, 3)  # texts[1] counts again
    assert (tally.queries, tally.model_calls) == (5, 4)
    assert drive(tally, model, tokenizer, [texts[0]]).shape == (0, 3)  # spent: a cached text is refused too
    assert (tally.queries, tally.model_calls) == (5, 4) and len(model.rows) == 4


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_attack_model_calls_are_the_texts_the_model_scored_and_queries_stay_within_the_budget(tokenizer, search):
    for seed in range(400, 412):
        words, label, table, weight = random_case(tokenizer, seed)
        for budget in (None, 7, "2x"):
            model = BagOfWords(weight)
            victim = Victim(model, tokenizer, MAX_LENGTH, batch_size=4)
            result = attack_one(victim, Example(words, label), search, dict_synonyms(table), 1.0, budget, seed)
            rechecked = result.status == "successful" or result.recheck_mismatch
            searched = model.rows[:len(model.rows) - rechecked]
            assert result.model_calls == len(model.rows) and len(set(searched)) == len(searched)
            assert result.model_calls <= result.queries + rechecked  # the cache only saves
            assert result.queries <= {None: 10**6, 7: 7, "2x": 2 * result.words}[budget]  # the re-check is no query
            assert model.calls[0] == 1  # the verdict on the original: one plain pass
            if rechecked:
                assert model.calls[-1] == 1 and model.rows[-1] in searched  # one plain pass of a scored text


def test_skipped_example_costs_one_query_and_is_not_attacked(tokenizer):
    words, label, table, weight = random_case(tokenizer, 7)
    model = BagOfWords(weight)
    result = attack_one(Victim(model, tokenizer, MAX_LENGTH), Example(words, 1 - label), "pwws", dict_synonyms(table))
    assert result.status == "skipped" and result.queries == result.model_calls == 1 and len(model.rows) == 1
    assert result.perturbed == words and result.changed == []


# ---------------------------------------------------------------------------------------------
# The re-checks of successes


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_success_that_depends_on_batching_is_marked_a_recheck_mismatch(tokenizer, search):
    table = {"movie": ("film", "picture"), "good": ("great", "fine"), "plot": ("story", "tale")}
    words = ("a", "good", "movie", "with", "a", "plot")
    weight = np.zeros((tokenizer.vocab_size, 2), dtype=np.float32)
    weight[tokenizer.convert_tokens_to_ids("a"), 0] = 1.0  # alone, every text is class 0 by a margin of 2
    model = BagOfWords(weight, batch_shift=np.array([-5.0, 5.0]))  # in a batch of several: class 1
    result = attack_one(Victim(model, tokenizer, MAX_LENGTH), Example(words, 0), search, dict_synonyms(table))
    assert result.recheck_mismatch and result.status == "failed" and not result.fp32_rerun
    assert int(np.argmax(result.probs_after)) == 0  # the plain pass's probabilities are reported
    summary = attacking.summarize([result.record()])
    assert summary["recheck_mismatches"] == 1 and summary["failed"] == 1 and summary["successful"] == 0


@pytest.mark.parametrize("search", attacks.SEARCHES)
def test_a_bf16_success_that_fp32_refutes_is_searched_again_in_fp32(tokenizer, search):
    """Under autocast the toy model leans to class 1, so the bf16 search 'succeeds' at once; unless
    that text flips the label in fp32 too, fp32 refutes it, and the fp32 search that follows
    reaches the fp32 search's own result."""
    reruns = 0
    for seed in range(1000, 1010):
        words, label, table, weight = random_case(tokenizer, seed)
        if label != 0:
            continue
        search_options = {"population": 8, "generations": 5} if search == "genetic" else {}
        shifted = BagOfWords(weight, bf16_shift=np.array([-50.0, 50.0]))
        result = attack_one(Victim(shifted, tokenizer, MAX_LENGTH, amp=True), Example(words, 0), search,
                            dict_synonyms(table), seed=seed, **search_options)
        plain = attack_one(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, 0), search,
                           dict_synonyms(table), seed=seed, **search_options)
        assert not result.recheck_mismatch
        if not result.fp32_rerun:
            assert result.status == "successful"  # the bf16 find held in fp32
            continue
        assert (result.status, result.perturbed, result.changed) == (plain.status, plain.perturbed, plain.changed)
        assert result.queries == plain.queries and result.model_calls > plain.model_calls  # the rerun's own count
        reruns += 1
    assert reruns >= 2


def test_summary_of_a_normal_model_has_no_recheck_mismatch(tokenizer):
    results = [r.record() for _, _, r in run_trials(tokenizer, 2, range(500, 510))]
    summary = attacking.summarize(results)
    assert summary["recheck_mismatches"] == 0 and summary["fp32_reruns"] == 0 and summary["successful"] > 0


# ---------------------------------------------------------------------------------------------
# summarize and accuracy_by_modify_rate


def make_record(status, changed, words, queries, mismatch=False):
    return {"status": status, "changed": changed, "words": words, "queries": queries, "model_calls": queries // 2,
            "recheck_mismatch": mismatch, "fp32_rerun": False}


def test_summarize_by_hand():
    records = [make_record("successful", [0], 4, 10),          # 1/4 of the words
               make_record("successful", [1, 2, 3], 6, 20),    # 3/6
               make_record("failed", [], 5, 30),
               make_record("failed", [1], 5, 40, mismatch=True),
               make_record("skipped", [], 8, 1)]
    s = attacking.summarize(records)
    assert s["examples"] == 5 and (s["successful"], s["failed"], s["skipped"]) == (2, 2, 1)
    assert s["clean_accuracy"] == pytest.approx(4 / 5)
    assert s["accuracy_under_attack"] == pytest.approx(2 / 5)
    assert s["attack_success_rate"] == pytest.approx(2 / 4)
    assert s["words_perturbed_pct"] == pytest.approx(100 * (1 / 4 + 3 / 6) / 2)
    assert s["avg_queries"] == pytest.approx((10 + 20 + 30 + 40) / 4)  # skipped ones are not attacked
    assert s["avg_model_calls"] == pytest.approx((5 + 10 + 15 + 20) / 4)
    assert s["recheck_mismatches"] == 1 and s["fp32_reruns"] == 0


def test_summarize_of_nothing_attacked():
    s = attacking.summarize([make_record("skipped", [], 4, 1)])
    assert s["clean_accuracy"] == 0 and s["accuracy_under_attack"] == 0
    assert s["attack_success_rate"] == 0 and s["words_perturbed_pct"] == 0 and s["avg_queries"] == 0
    assert attacking.summarize([])["examples"] == 0


def test_accuracy_by_modify_rate_by_hand_and_at_the_full_rate_equals_the_summary():
    records = [make_record("successful", [0], 10, 5),           # 1 change of 10 words
               make_record("successful", [0, 1, 2], 10, 5),     # 3 of 10
               make_record("successful", [0, 1], 4, 5),         # 2 of 4
               make_record("failed", [], 10, 5),
               make_record("skipped", [], 10, 1)]
    # rate 0: no change allowed, every success is undone: 3 successes + 1 failure robust
    # rate 0.1: floor(1)=1 of 10, floor(0.4)=0 of 4: the first success stands
    # rate 0.25: 2 of 10, 1 of 4: the first stands; rate 0.3: 3 of 10 and 1 of 4: two stand
    # rate 0.5: all three stand
    assert attacking.accuracy_by_modify_rate(records, [0.0, 0.1, 0.25, 0.3, 0.5]) == \
        pytest.approx([4 / 5, 3 / 5, 3 / 5, 2 / 5, 1 / 5])
    assert attacking.accuracy_by_modify_rate(records, [0.5])[0] == attacking.summarize(records)["accuracy_under_attack"]


def test_accuracy_by_modify_rate_at_the_attack_rate_matches_real_attacks(tokenizer):
    records = [r.record() for _, _, r in run_trials(tokenizer, 2, range(600, 615), rates=(0.3,))]
    assert attacking.accuracy_by_modify_rate(records, [0.3]) == [attacking.summarize(records)["accuracy_under_attack"]]


@pytest.mark.parametrize("search", ["pwws", "textfooler"])
def test_accuracy_by_modify_rate_is_exact_for_the_greedy_searches(tokenizer, search):
    """The docstring's claim: for the greedy searches a lower cap only cuts the path short."""
    for seed in range(700, 730):
        words, label, table, weight = random_case(tokenizer, seed)
        if word_count(words) < 5:
            continue
        full = attack_one(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, label), search,
                          dict_synonyms(table))
        for rate in (0.2, 0.4):
            capped = attack_one(Victim(BagOfWords(weight), tokenizer, MAX_LENGTH), Example(words, label), search,
                                dict_synonyms(table), rate)
            assert attacking.accuracy_by_modify_rate([full.record()], [rate])[0] == (capped.status == "failed")


# ---------------------------------------------------------------------------------------------
# Where a text may change


@pytest.mark.parametrize("token", ["(brilliant,", "'s", "n't", "well-made", "--", "a.k.a", "1/2", "'CCC'",
                                   "c.h.o.", "t&a", "don't", "x@y", "...", "rock'n'roll", "_under_"])
def test_word_spans_are_textattacks_words(token):
    assert [token[a:b] for a, b in attacks.word_spans(token)] == ta_words(token)


def test_swap_replaces_one_word_and_keeps_its_punctuation():
    words = ("(good,", "a.k.a", "film")
    assert attacks.swap(words, (0, 0), "fine") == ("(fine,", "a.k.a", "film")
    assert attacks.swap(words, (1, 2), "b") == ("(good,", "a.k.b", "film")
    assert attacks.slots(words) == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert attacks.word_count(words) == 5
    assert attacks.changed_words(words, ("(fine,", "a.k.b", "film")) == [0, 3]


def test_substitutions_keep_punctuation_skip_stopwords_as_spelled_and_sort_by_text():
    table = {"Movie": ("picture", "film", "Movie"), "GOOD": ("great",), "brilliant": ("superb", "ace-high", "a.m."),
             "the": ("thee",), "The": ("Thee",), "not": ("nay",), "was": ("existed",), "plot": ()}
    words = ("The", "Movie", "was", "GOOD", ",", "(brilliant,", "--", "not", "plot", "...")
    assert attacks.substitutions(words, dict_synonyms(table)) == {  # "plot" may change but has no synonym
        (0, 0): ["Thee"], (1, 0): ["film", "picture"], (3, 0): ["great"], (5, 0): ["ace-high", "superb"], (8, 0): []}
    extended = attacks.substitutions(words, dict_synonyms(table), "extended")
    assert (0, 0) not in extended and (1, 0) in extended  # the stricter list, in any case


def test_substitutions_never_touch_clitics_that_are_stopwords():
    """SST-2 and PTB text split clitics off ("it 's"): the word of "'s" is s, an NLTK stopword, so
    WordNet's "second" or "sulfur" never replace it."""
    table = {"s": ("second", "sulfur"), "m": ("meter",), "d": ("calciferol",), "good": ("great",)}
    words = ("it", "'s", "good", ",", "i", "'m", "sure", "you", "'d", "agree")
    assert attacks.substitutions(words, dict_synonyms(table)) == {(2, 0): ["great"], (6, 0): [], (9, 0): []}


# ---------------------------------------------------------------------------------------------
# Embedding-space PGD as an evaluation


def labelled_half_right(model, tokenizer) -> list[Example]:
    """Sentences labelled so that the model gets the even ones right and the odd ones wrong."""
    sentences = ["a good film", "dull and slow", "it is fine , i guess", "one of the best of the year",
                 "an awful mess", "not bad at all", "brilliant"]
    examples = [Example(tuple(s.split()), 0) for s in sentences]
    predicted = rift.predict_proba(model, tokenizer, examples, 32).argmax(-1).tolist()
    return [Example(ex.words, p if n % 2 == 0 else 1 - p) for n, (ex, p) in enumerate(zip(examples, predicted))]


def test_pgd_as_an_attack_at_eps_zero_leaves_every_verdict_clean_and_keeps_the_text(tiny_model):
    model, tokenizer = rift.load_classifier(str(tiny_model), num_labels=2)
    labelled = labelled_half_right(model, tokenizer)
    seeds = list(range(len(labelled)))
    with Victim(model, tokenizer, 32, batch_size=3) as victim:
        clean = dict(adversaries.PGD(0.0, attack_steps=3).attack(victim, labelled, seeds))
        assert [clean[n].status for n in range(len(labelled))] == ["failed" if n % 2 == 0 else "skipped"
                                                                  for n in range(len(labelled))]
        for norm in ("l2", "linf"):
            robust = dict(adversaries.PGD(2.0, norm=norm, attack_steps=2).attack(victim, labelled, seeds))
            assert sorted(robust) == seeds
            assert all((r.status == "skipped") == (n % 2 == 1) and r.perturbed == r.original and r.queries == 4 - 3 * (n % 2)
                       for n, r in robust.items())


def test_every_attack_skips_what_is_done_and_gives_the_rest_as_a_whole_run_would(tiny_model):
    """The one contract of attacking.WordAttack, adversaries.PGD and adversaries.ASCC as attacks,
    which evaluate.py's resume and its processes' shares rely on."""
    model, tokenizer = rift.load_classifier(str(tiny_model), num_labels=2)
    labelled = labelled_half_right(model, tokenizer)
    table = {"good": ("great", "fine"), "film": ("movie",), "dull": ("boring",), "slow": ("sluggish",),
             "fine": ("good",), "best": ("finest",), "awful": ("terrible",), "brilliant": ("superb",)}
    word_synonyms = dict_synonyms(table)
    seeds = [[7, n] for n in range(len(labelled))]
    every = [attacking.WordAttack("pwws", word_synonyms), attacking.WordAttack("genetic", word_synonyms,
                                                                           options={"population": 4, "generations": 2}),
             adversaries.PGD(1.0, attack_steps=2), adversaries.ASCC(adversaries.neighbour_table(tokenizer, word_synonyms))]
    with Victim(model, tokenizer, 32, batch_size=2) as victim:
        for attack in every:
            whole = dict(attack.attack(victim, labelled, seeds))
            rest = dict(attack.attack(victim, labelled, seeds, done={0, 1, 2, 5}))
            assert sorted(whole) == list(range(len(labelled))) and sorted(rest) == [3, 4, 6], attack
            assert all(rest[n].record() | {"seconds": 0} == whole[n].record() | {"seconds": 0} for n in rest), attack


# ---------------------------------------------------------------------------------------------
# Which examples are attacked


def test_sample_examples_draws_what_evaluate_parity_bench_and_train_drew_before_it_was_shared(shared_data):
    """One function for the examples attacked: the same draws, bit for bit, as the four copies it
    replaced (written out here as they stood), on SST-2's test split and on pairs."""
    import data
    sst2 = data.load_split(data.TASKS["sst2"], "test", str(shared_data))
    pairs = [Example(tuple("a b c d e f".split()[:n % 6 + 1]), 0, context="x " * (n % 9)) for n in range(300)]
    old_rules = {"words": lambda ex: attacks.word_count(ex.words),
                 "textdefender": lambda ex: len((ex.context or ex.text).split(" "))}
    for examples in (sst2, pairs):
        for rule, min_words, n, seed in (("words", 4, 1000, 42), ("words", 0, 50, 7), ("textdefender", 5, 100, 42),
                                         ("words", 4, 10 ** 6, 1)):
            eligible = [i for i, ex in enumerate(examples) if old_rules[rule](ex) >= min_words]  # evaluate.py's
            assert attacks.sample_examples(examples, n, seed, min_words, rule) == \
                random.Random(seed).sample(eligible, min(n, len(eligible)))
        eligible = [i for i, ex in enumerate(examples) if attacks.word_count(ex.words) >= 4]  # parity.py's
        assert attacks.sample_examples(examples, 40, 42) == random.Random(42).sample(eligible, 40)
        assert [examples[i] for i in attacks.long_enough(examples)] == \
            [ex for ex in examples if attacks.word_count(ex.words) >= 4]  # bench.py's
        assert [examples[i] for i in attacks.sample_examples(examples, 300, 0, min_words=0)] == \
            random.Random(0).sample(examples, min(300, len(examples)))  # train.py's robust-selection sentences


def test_the_worst_case_counts_an_example_robust_only_if_no_attack_broke_it():
    """Two attacks that break disjoint examples: the worst case is broken on their union."""
    statuses = {"pwws": ["successful", "failed", "failed", "skipped"],
                "textfooler": ["failed", "successful", "failed", "skipped"]}
    lines = [{"attack": search, "index": 10 + n, "status": status}
             for search, column in statuses.items() for n, status in enumerate(column)]
    row, broken_by = attacking.worst_case(lines, ["pwws", "textfooler"])
    assert broken_by == {10: "pwws", 11: "textfooler"}
    assert (row["clean_accuracy"], row["accuracy_under_attack"], row["attack_success_rate"]) == (0.75, 0.25, 2 / 3)
    assert row["broken_first_by"] == {"pwws": 1, "textfooler": 1}
    lines[0]["status"] = lines[4]["status"] = "successful"  # both break example 10: the first in order is named
    assert attacking.worst_case(lines, ["textfooler", "pwws"])[1][10] == "textfooler"
    with pytest.raises(ValueError, match="every example attacked by every attack"):
        attacking.worst_case(lines[:-1], ["pwws", "textfooler"])


# ---------------------------------------------------------------------------------------------
# DeepWordBug: character edits


def every_edit(word: str) -> list[set[str]]:
    """Each of TextAttack's four character transformations, every place and letter spelled out."""
    letters = string.ascii_letters
    return [{word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)},
            {word[:i] + c + word[i + 1:] for i in range(len(word)) for c in letters},
            {word[:i] + word[i + 1:] for i in range(len(word))},
            {word[:i] + c + word[i:] for i in range(len(word)) for c in letters}]


@pytest.mark.parametrize("word", ["a", "ok", "film", "Brilliant"])
def test_character_edits_are_textattacks_four_at_random_places(word):
    drawn = [set(), set(), set(), set()]
    for seed in range(300):
        edits = attacks.character_edits(word, np.random.default_rng(seed))
        if len(word) <= 1:
            assert edits == []
            continue
        assert len(edits) == 4
        for kind, (edit, possible) in enumerate(zip(edits, every_edit(word))):
            assert edit in possible, (kind, edit)
            drawn[kind].add(edit)
    if len(word) > 1:  # every place gets drawn
        assert len(drawn[0]) == len(every_edit(word)[0]) and len(drawn[2]) == len(every_edit(word)[2])


def test_edit_distance_is_levenshteins_by_brute_force_recursion():
    @functools.lru_cache(maxsize=None)
    def reference(a: str, b: str) -> int:
        if not a or not b:
            return len(a) + len(b)
        return min(reference(a[1:], b) + 1, reference(a, b[1:]) + 1, reference(a[1:], b[1:]) + (a[0] != b[0]))
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = ("".join(rng.choice(list("abc "), rng.integers(0, 7))) for _ in range(2))
        assert attacks.edit_distance(a, b) == reference(a, b), (a, b)
    assert attacks.edit_distance("kitten", "sitting") == 3


def misspelling_model(tokenizer) -> np.ndarray:
    """Class 0 only while "good" is spelled right: logits good -> (1, 0), every text (0, 0.5)."""
    weight = np.zeros((tokenizer.vocab_size, 2), dtype=np.float32)
    weight[tokenizer.convert_tokens_to_ids("good"), 0] = 1.0
    weight[tokenizer.cls_token_id, 1] = 0.5
    return weight


def test_deepwordbug_misspells_the_word_that_matters_first_and_within_the_edit_distance(tokenizer):
    """"good" ranks first ([UNK] in its place flips the model); its four edits are those the
    example's seed draws; each one whose tokens no longer hold "good" flips it, and the first of
    them is kept. Queries: the original, three [UNK] texts ("a" is a stopword), the edits."""
    example, successes = Example(("a", "good", "movie", "plot"), 0), 0
    for seed in range(20):
        edits = [e for e in dict.fromkeys(attacks.character_edits("good", np.random.default_rng(seed))) if e != "good"]
        flips = [e for e in edits if "good" not in tokenizer.tokenize(e)]
        model = BagOfWords(misspelling_model(tokenizer))
        result = attack_one(Victim(model, tokenizer, MAX_LENGTH), example, "deepwordbug", lambda word: (), seed=seed)
        if not flips:
            assert result.status == "failed" and result.perturbed[1] == "good"
            continue
        assert result.status == "successful" and result.changed == [1] and result.perturbed[1] == flips[0]
        assert result.queries == 1 + 3 + len(edits)
        assert flips[0] in set().union(*every_edit("good")) and attacks.edit_distance("good", flips[0]) <= 2
        successes += 1
    assert successes >= 10


def test_deepwordbug_keeps_no_edit_beyond_the_edit_distance(tokenizer):
    """Driven by hand with a model no edit moves: every text the search offers stays within the
    limit (0: none at all; 1: no neighbour swap, which costs 2), and it ends with the original."""
    words = ("good", "movie")
    for limit, allowed in ((0, set()), (1, {1}), (30, {1, 2})):
        offered = set()
        for seed in range(10):
            search = attacks.deepwordbug(lambda texts: (yield texts), words, 0, np.array([0.9, 0.1]),
                                         {(0, 0): [], (1, 0): []}, 2, np.random.default_rng(seed),
                                         max_edit_distance=limit)
            try:
                texts = next(search)  # the [UNK] ranking
                texts = search.send(np.tile([0.9, 0.1], (len(texts), 1)))
                while True:
                    offered |= {attacks.edit_distance(" ".join(words), " ".join(t)) for t in texts}
                    texts = search.send(np.tile([0.95, 0.05], (len(texts), 1)))  # never better: the next word
            except StopIteration as done:
                assert done.value == words
        assert offered == allowed, (limit, offered)


def test_deepwordbug_offers_edits_that_leave_an_apostrophe_at_the_edge_as_textattack_does():
    """"n't" -> "'nt" or "nt'": TextAttack keeps such an edit and reads the word as "nt"."""
    words, offered = ("it", "n't"), set()
    for seed in range(40):
        search = attacks.deepwordbug(lambda texts: (yield texts), words, 0, np.array([0.9, 0.1]), {(1, 0): []}, 2,
                                     np.random.default_rng(seed))
        try:
            texts = next(search)  # the [UNK] ranking
            texts = search.send(np.tile([0.9, 0.1], (len(texts), 1)))
            offered |= {t[1] for t in texts}
            search.send(np.tile([0.95, 0.05], (len(texts), 1)))
        except StopIteration:
            pass
    assert offered <= set().union(*every_edit("n't"))
    assert {"'nt", "nt'"} & offered and {attacks.word_at(("x", t), (1, 0)) for t in offered} >= {"nt"}
