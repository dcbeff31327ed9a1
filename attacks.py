"""Word-substitution attacks, written here on numpy: how robust is a classifier, really?

An attack takes a correctly classified example and looks for synonym swaps that flip the model's
prediction. PWWS (Ren et al. 2019) is the default, run as TextAttack 0.3.11 runs it
(`PWWSRen2019`), the implementation most published numbers come from; TextFooler (Jin et al.
2020) and the genetic attack (Alzantot et al. 2018, as Jia et al. 2019 run it) are the others.
The rules are TextAttack's:
  - a word is a run of letters, digits and '-_*@ that neither starts nor ends with one of '-_*@
    (textattack.shared.utils.words_from_text): "(brilliant," holds the word brilliant, "'s" the
    word s; the punctuation around a word stays as it is,
  - stopwords never change: NLTK's 179 English stopwords, matched as spelled ("The" is no stopword),
  - each word changes at most once, into one word its synonym source proposes (synonyms.py),
  - two optional caps: at most `max_modify_rate` of the words change and at most `query_budget`
    queries per example (`N`, or `"Nx"`: N per word of the whole input). TextAttack's PWWS has
    neither (TextDefender: 30%, 50x).
Queries are counted as TextAttack counts them (GoalFunction.get_results): every text a search hands
in counts, whether the cache knows it or not, after the list is cut to what is left of the budget,
and the original's first query counts too; the search ends when the budget is spent. A second
count, `model_calls`, keeps the texts the model really scored, the cache's saving.
A stricter variant that keeps the meaning closer (`stopwords="extended"`, and WordNet's usual part
of speech in synonyms.py) is there on request, never by default.

Speed is why this is not TextAttack. Each search is a generator: it yields the texts it needs
scored and receives their probabilities. So many examples are attacked at once and every model
call carries the candidates of many examples (length-sorted, dynamically padded, inference mode);
a per-example cache scores no text twice; and a word past the model's truncation window is never
queried, since swapping it cannot change what the model sees. The search may run under bf16
autocast; its verdict may not: every success is re-checked alone in fp32, and a bf16 success
that fp32 does not confirm is searched again, from the start, in fp32.
"""

import math
import random
import re
import string
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from data import Example
from rift import predict_proba
from synonyms import STOPWORDS

# ---------------------------------------------------------------------------------------------
# Where a text may change

WORD_RUN = re.compile(r"[\w'\-_*@]+")
WORD_EDGES = "'-_*@"
UNK = "[UNK]"  # TextAttack's placeholder for a removed word, whatever the model; BERT reads it as its unknown token

Slot = tuple[int, int]  # a word's address: (whitespace token, word within that token)


def word_spans(token: str) -> list[tuple[int, int]]:
    """Where TextAttack's words lie in one whitespace token: "(well-made," -> [(1, 10)]."""
    spans = []
    for run in WORD_RUN.finditer(token):
        text = run.group()
        start, end = run.start() + len(text) - len(text.lstrip(WORD_EDGES)), run.end() - len(text) + len(text.rstrip(WORD_EDGES))
        if start < end:
            spans.append((start, end))
    return spans


def slots(words: tuple[str, ...]) -> list[Slot]:
    return [(i, k) for i, token in enumerate(words) for k in range(len(word_spans(token)))]


def word_at(words: tuple[str, ...], slot: Slot) -> str:
    start, end = word_spans(words[slot[0]])[slot[1]]
    return words[slot[0]][start:end]


def swap(words: tuple[str, ...], slot: Slot, new: str) -> tuple[str, ...]:
    """The text with the word at `slot` replaced and its punctuation kept: "(good," -> "(fine,"."""
    i, k = slot
    start, end = word_spans(words[i])[k]
    return words[:i] + (words[i][:start] + new + words[i][end:],) + words[i + 1:]


def word_count(words: tuple[str, ...]) -> int:
    """Words as the modification rate and % words perturbed count them (TextAttack's)."""
    return sum(len(word_spans(token)) for token in words)


# The examples an evaluation attacks have at least MIN_WORDS words (evaluate.py --min-words), counted as
# TextAttack counts the attacked text's or as TextDefender does: len(text_a.split(' ')), the first text's.
MIN_WORDS = 4
LENGTH_RULES = {"words": lambda ex: word_count(ex.words),
                "textdefender": lambda ex: len((ex.context or ex.text).split(" "))}


def long_enough(examples: list[Example], min_words: int = MIN_WORDS, length_rule: str = "words") -> list[int]:
    return [i for i, ex in enumerate(examples) if LENGTH_RULES[length_rule](ex) >= min_words]


def sample_examples(examples: list[Example], n: int, seed: int, min_words: int = MIN_WORDS,
                    length_rule: str = "words") -> list[int]:
    """The positions of n long-enough examples (all when fewer) drawn with `seed`: the ones attacked."""
    eligible = long_enough(examples, min_words, length_rule)
    return random.Random(seed).sample(eligible, min(n, len(eligible)))


def changed_words(original: tuple[str, ...], perturbed: tuple[str, ...]) -> list[int]:
    """The changed words, numbered in reading order (0 = the text's first word)."""
    return [n for n, slot in enumerate(slots(original)) if word_at(original, slot) != word_at(perturbed, slot)]


def substitutions(words: tuple[str, ...], synonyms, stopwords: str = "nltk") -> dict[Slot, list[str]]:
    """For each word that may change, its replacements, in TextAttack's order (sorted by the text
    each one makes, which decides ties). A replacement must be one whole word, so every word keeps
    its address. Stopwords are left out; a word without synonyms keeps an empty list, because
    TextAttack's word-importance ranking still queries it (get_indices_to_order: the words the
    stopword rule allows)."""
    is_stopword = STOPWORDS[stopwords]
    options = {}
    for slot in slots(words):
        word = word_at(words, slot)
        if is_stopword(word):
            continue
        candidates = [c for c in dict.fromkeys(synonyms(word)) if c != word and word_spans(c) == [(0, len(c))]]
        options[slot] = sorted(candidates, key=lambda c: " ".join(swap(words, slot, c)))
    return options


# ---------------------------------------------------------------------------------------------
# Searches. Each is a generator: `p = yield from score(texts)` hands texts to the model and gets
# their probabilities (n, C) back, n < len(texts) only when the query budget runs out. `start` is
# the original's probabilities (TextAttack hands its searches that first query's result, so no
# search asks for the original again). Each returns the best text it found (the original when it
# found nothing better). The goal score of a text is TextAttack's 1 - p(y): how far the model is
# from the true label.

def pwws(score, words, label: int, start, options: dict, max_changes: int, rng):
    """Probability Weighted Word Saliency (Ren et al. 2019), as TextAttack's GreedyWordSwapWIR
    ("weighted-saliency") runs it:
      1. rank the words by softmax(saliency) x the best goal score one swap of the word reaches on
         the original text, where a word's saliency is the goal score with the word made [UNK];
      2. greedily, in that order, score every swap of the next word on the *current* text and keep
         the best if it beats the current goal score; stop at the first misclassified text.
    Every word that may change is made [UNK] (a word without candidates too: its best swap counts
    0), so the softmax, the order and the queries are TextAttack's. Out of budget: a ranking cut
    short returns the original; a greedy step cut short still keeps its best, then the search ends."""
    positions = list(options)
    unknown = [swap(words, slot, UNK) for slot in positions]
    swaps = [swap(words, slot, c) for slot in positions for c in options[slot]]
    p = yield from score(unknown + swaps)
    if len(p) < len(unknown) + len(swaps):
        return words
    goal = 1 - p[:, label]
    saliency = torch.softmax(torch.tensor(goal[:len(unknown)]), 0).numpy()  # float32, as TextAttack
    ends = np.cumsum([len(options[slot]) for slot in positions]) + len(unknown)
    best_swap = np.array([goal[end - len(options[slot]):end].max() if options[slot] else 0.0
                          for slot, end in zip(positions, ends)], np.float64)
    order = np.argsort(-(saliency * best_swap))  # numpy's default sort, as TextAttack's
    current, current_goal, changes = words, 1 - start[label], 0
    for n in [n for n in order if options[positions[n]]]:
        if changes >= max_changes:
            break
        candidates = [swap(current, positions[n], c) for c in options[positions[n]]]
        p = yield from score(candidates)
        if not len(p):
            break  # out of budget
        best = int(np.argmax(1 - p[:, label]))  # the first best: candidates come in TextAttack's order
        if 1 - p[best, label] > current_goal:
            current, current_goal, changes = candidates[best], 1 - p[best, label], changes + 1
            if p[best].argmax() != label:
                break
        if len(p) < len(candidates):
            break  # the budget ran out within this step
    return current


def textfooler(score, words, label: int, start, options: dict, max_changes: int, rng):
    """TextFooler (Jin et al. 2020) without its sentence encoder and POS tagger (none offline).
    Word importance = the change of the prediction when the word is deleted; then, most important
    first, swap in the synonym that flips the label (the nearest such neighbour), else the one that
    lowers p(y) most, if any does. As in TextAttack's ranking, every word that may change is
    deleted once, with or without candidates."""
    positions = list(options)
    deleted = yield from score([swap(words, slot, "") for slot in positions])
    if len(deleted) < len(positions):
        return words
    p0 = start
    importance = p0[label] - deleted[:, label]
    moved = deleted.argmax(1) != label  # deletion alone flips: add how much the new class gained
    new_class = deleted[moved].argmax(1)
    importance[moved] += deleted[moved, new_class] - p0[new_class]
    current, p_current, changes = words, p0[label], 0
    order = np.argsort(-importance, kind="stable")
    for n in [n for n in order if options[positions[n]]]:
        if changes >= max_changes:
            break
        candidates = [swap(current, positions[n], c) for c in options[positions[n]]]
        p = yield from score(candidates)
        flips = [j for j in range(len(p)) if p[j].argmax() != label]
        if flips:
            return candidates[flips[0]]  # neighbours come nearest first: the most similar flip
        if len(p) < len(candidates):
            break  # out of budget
        if p[:, label].min() < p_current:
            best = int(p[:, label].argmin())
            current, p_current, changes = candidates[best], p[best, label], changes + 1
    return current


POPULATION, GENERATIONS = 60, 40  # the genetic attack's, as Alzantot et al. and the paper run it


def genetic(score, words, label: int, start, options: dict, max_changes: int, rng,
            population: int = POPULATION, generations: int = GENERATIONS, temperature: float = 0.3):
    """The genetic attack of Alzantot et al. (2018) as Jia et al. (2019) run it (without its
    language model, which is not available offline). Fitness = 1 - p(y). Each generation keeps
    its best member (elitism), draws parent pairs with probability softmax(fitness / temperature),
    crosses them uniformly word by word, and mutates every child: at one random word not yet
    changed (a changed one once the cap is reached), try every synonym and keep the fittest. The
    members' scores are those of their mutation (TextAttack keeps each member's result too), so
    no member is queried twice; `start` is not needed."""
    positions = [slot for slot in options if options[slot]]
    if not positions:
        return words  # nothing to mutate

    def changed(member) -> list[Slot]:
        return [slot for slot in positions if word_at(member, slot) != word_at(words, slot)]

    def mutate(members: list):
        proposals = []
        for member in members:
            done = changed(member)
            fresh = [slot for slot in positions if slot not in done]
            pool = fresh if fresh and len(done) < max_changes else done
            slot = pool[rng.integers(len(pool))]
            proposals.append([swap(member, slot, c) for c in options[slot] if c != word_at(member, slot)] or [member])
        p = yield from score([text for texts in proposals for text in texts])
        mutated, rows, offset = [], [], 0
        for texts in proposals:
            if offset + len(texts) > len(p):
                break  # out of budget: the members from here on go unscored
            fittest = offset + int((1 - p[offset:offset + len(texts), label]).argmax())
            mutated.append(texts[fittest - offset])
            rows.append(p[fittest])
            offset += len(texts)
        return mutated + members[len(mutated):], np.stack(rows) if rows else p[:0]

    def crossover(a, b):
        child = words
        for slot in positions:
            word = word_at(a if rng.random() < 0.5 else b, slot)
            child = swap(child, slot, word) if word != word_at(words, slot) else child
        done = changed(child)  # within the cap: undo changes at random
        for n in rng.permutation(len(done))[:max(len(done) - max_changes, 0)]:
            child = swap(child, done[n], word_at(words, done[n]))
        return child

    members, p = yield from mutate([words] * population)
    best = words
    for _ in range(generations):
        if len(p) < len(members):
            break
        fitness = 1 - p[:, label]
        flipped = np.flatnonzero(p.argmax(1) != label)  # with 3+ classes the fittest may not be flipped
        if len(flipped):
            return members[int(flipped[fitness[flipped].argmax()])]
        best = members[int(fitness.argmax())]
        parents = np.exp((fitness - fitness.max()) / temperature)
        pairs = rng.choice(len(members), size=(population - 1, 2), p=parents / parents.sum())
        children, q = yield from mutate([crossover(members[a], members[b]) for a, b in pairs])
        members, p = [best] + children, np.concatenate([p[[int(fitness.argmax())]], q])
    return best


def character_edits(word: str, rng) -> list[str]:
    """DeepWordBug's four edits of one word, each at one random place (TextAttack's
    WordSwapNeighboringCharacterSwap, ...RandomCharacterSubstitution, ...Deletion, ...Insertion,
    random_one): swap two neighbouring characters, replace one by a random ASCII letter, delete
    one, insert a random letter before one. A word of one character has none."""
    if len(word) <= 1:
        return []
    letter = string.ascii_letters
    i, j, k, m = (rng.integers(0, n) for n in (len(word) - 1, len(word), len(word), len(word)))
    return [word[:i] + word[i + 1] + word[i] + word[i + 2:],
            word[:j] + letter[rng.integers(len(letter))] + word[j + 1:],
            word[:k] + word[k + 1:],
            word[:m] + letter[rng.integers(len(letter))] + word[m:]]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each 1."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def deepwordbug(score, words, label: int, start, options: dict, max_changes: int, rng,
                max_edit_distance: int = 30):
    """DeepWordBug (Gao et al. 2018) as TextAttack 0.3.11 runs it (`DeepWordBugGao2018`):
      1. rank the words that may change by the goal score with the word made [UNK] (GreedyWordSwapWIR's
         "unk" ranking);
      2. in that order, draw the word's four character edits (character_edits) on the current
         text, keep those whose text stays within `max_edit_distance` characters of the original
         (Levenshtein, LevenshteinEditDistance(30)), and take the best if it beats the current
         goal score; stop at the first misclassified text.
    `options` only says which words may change (no stopword, inside the window); an edit that
    would make the word two words (a deletion in "well-made" exposing '-') is left out, so every
    word keeps its address. The edits are random: outcomes match TextAttack's in rate, not one by
    one."""
    positions = list(options)
    p = yield from score([swap(words, slot, UNK) for slot in positions])
    if len(p) < len(positions):
        return words
    order = np.argsort(-(1 - p[:, label]))  # numpy's default sort, as TextAttack's
    original, bound = " ".join(words), 0  # bound: the per-word distances summed, >= the text's distance
    current, current_goal, changes = words, 1 - start[label], 0
    for n in order:
        if changes >= max_changes:
            break
        word = word_at(current, positions[n])
        edits = [e for e in dict.fromkeys(character_edits(word, rng)) if e != word and word_spans(e) == [(0, len(e))]]
        # Exact, and cheap where the bound already allows it: the full distance only past it.
        edits = [e for e in edits if bound + edit_distance(word, e) <= max_edit_distance or
                 edit_distance(original, " ".join(swap(current, positions[n], e))) <= max_edit_distance]
        if not edits:
            continue
        candidates = [swap(current, positions[n], e) for e in edits]
        p = yield from score(candidates)
        if not len(p):
            break  # out of budget
        best = int(np.argmax(1 - p[:, label]))
        if 1 - p[best, label] > current_goal:
            bound += edit_distance(word, edits[best])
            current, current_goal, changes = candidates[best], 1 - p[best, label], changes + 1
            if p[best].argmax() != label:
                break
        if len(p) < len(candidates):
            break  # the budget ran out within this step
    return current


SEARCHES = {"pwws": pwws, "textfooler": textfooler, "genetic": genetic, "deepwordbug": deepwordbug}


# ---------------------------------------------------------------------------------------------
# Running attacks: one generator per example, many examples at once

class Request(NamedTuple):
    texts: list  # word tuples to score
    amp: bool  # under bf16 autocast
    alone: bool  # fp32, one text per forward pass: a verdict that depends on no batch


class Tally:
    """One example's queries, counted as TextAttack counts them (every text handed in, cached or
    not), against the budget (None: no limit); and its model calls, the texts the model really
    scored (cached: none is scored twice in one precision)."""

    def __init__(self, budget: int | None, num_classes: int):
        self.budget, self.num_classes, self.queries, self.model_calls, self.cache = budget, num_classes, 0, 0, {}

    def score(self, texts: list, amp: bool):
        """Probabilities (n, C) of the first n texts, n what is left of the budget (TextAttack cuts
        the list the same way); callers zip them with their texts, so a budget that runs out
        mid-step shortens the step."""
        texts = texts if self.budget is None else texts[:max(self.budget - self.queries, 0)]
        self.queries += len(texts)
        new = [t for t in dict.fromkeys(texts) if (amp, t) not in self.cache]
        if new:
            self.cache.update(zip([(amp, t) for t in new], (yield Request(new, amp, False))))
            self.model_calls += len(new)
        return np.stack([self.cache[(amp, t)] for t in texts]) if texts else np.zeros((0, self.num_classes), np.float32)

    def alone(self, words: tuple[str, ...]):
        """The fp32 verdict on one text, in a forward pass of its own: a model call, never a query.
        TextAttack has no such re-check of a success, so it must not eat the budget (nor change the
        count a reader compares with TextAttack's); the first verdict, on the original, is the
        original's query, which attack() counts."""
        probs = yield Request([words], False, True)
        self.model_calls += 1
        return probs[0]


@dataclass
class AttackResult:
    status: str  # "skipped" (misclassified before any attack), "successful" or "failed"
    label: int
    original: tuple[str, ...]
    perturbed: tuple[str, ...]
    changed: list[int]  # changed words, numbered in reading order
    words: int  # words of the original, as the modification rate counts them
    probs_before: list[float]
    probs_after: list[float]
    queries: int  # as TextAttack counts them: every text the search handed in, the original's first query too
    model_calls: int  # texts the model really scored (cache hits left out, fp32 re-checks and reruns in)
    seconds: float  # from its first query to its verdict (examples attacked together overlap)
    context: str | None = None
    recheck_mismatch: bool = False  # the fp32 search's success did not hold when re-checked alone
    fp32_rerun: bool = False  # the bf16 search's success did not hold in fp32: searched again in fp32

    def record(self) -> dict:
        """The line of adversarial.jsonl, which summarize() reads."""
        return {"status": self.status, "label": self.label, "context": self.context,
                "original": " ".join(self.original), "perturbed": " ".join(self.perturbed),
                "changed": self.changed, "words": self.words,
                "pred_before": int(np.argmax(self.probs_before)), "pred_after": int(np.argmax(self.probs_after)),
                "probs_before": self.probs_before, "probs_after": self.probs_after, "queries": self.queries,
                "model_calls": self.model_calls,
                "seconds": self.seconds, "recheck_mismatch": self.recheck_mismatch, "fp32_rerun": self.fp32_rerun}


def example_budget(budget: int | str | None, example: Example) -> int | None:
    """One example's query budget: N texts (an int), or for "Nx" N times its words as TextDefender
    counts them (query_budget_size x attacked_text.num_words: the words of the whole input, the
    premise's too for a sentence pair)."""
    if not isinstance(budget, str):
        return budget
    context = tuple(example.context.split()) if example.context else ()
    return int(budget.removesuffix("x")) * (word_count(context) + word_count(example.words))


def attack(example: Example, search: str, options: dict, max_changes: int, query_budget: int | str | None,
           seed, amp: bool, num_classes: int, search_options: dict):
    """One example's attack, as a generator of Requests that returns its AttackResult."""
    started = time.perf_counter()
    words, label = example.words, example.label
    tally = Tally(example_budget(query_budget, example), num_classes)
    before = yield from tally.alone(words)
    tally.queries = 1  # the verdict on the original: TextAttack's first query
    if before.argmax() != label:
        return AttackResult("skipped", label, words, words, [], word_count(words), before.tolist(), before.tolist(),
                            tally.queries, tally.model_calls, time.perf_counter() - started, example.context)
    tally.cache[(False, words)] = before  # the fp32 search's first query, made already
    status, after, mismatch, rerun, perturbed = "failed", before, False, False, words
    for search_amp in ((True, False) if amp else (False,)):
        if not options or max_changes <= 0:
            break
        # Each search counts from the original's query, an fp32 rerun too: it replaces the bf16
        # search, as if that had never run, so it gets the whole budget and the count is its own.
        tally.queries = 0
        start = (yield from tally.score([words], search_amp))[0]
        rng = np.random.default_rng(seed)  # an fp32 rerun draws what the bf16 search drew
        perturbed = yield from SEARCHES[search](lambda texts: tally.score(texts, search_amp), words, label, start,
                                                options, max_changes, rng, **search_options)
        after = tally.cache.get((search_amp, perturbed), before)
        if after.argmax() == label:
            break
        after = yield from tally.alone(perturbed)
        if after.argmax() != label:
            status = "successful"
            break
        rerun, mismatch = rerun or search_amp, not search_amp
    return AttackResult(status, label, words, perturbed, changed_words(words, perturbed), word_count(words),
                        before.tolist(), after.tolist(), tally.queries, tally.model_calls,
                        time.perf_counter() - started, example.context, mismatch, rerun)


class Victim:
    """The model as the attacks see it: texts of many examples in, probabilities out, with the
    time spent in its forward passes kept apart from everything else. Use it in a `with` block:
    the timing hooks come off the model at the end. amp: run the searches under bf16 autocast."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 32, amp: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.amp = max_length, batch_size, amp
        self.model_seconds = 0.0
        self.hooks = [model.register_forward_pre_hook(lambda *_: self._tick()),
                      model.register_forward_hook(lambda *_: self._tock())]

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for hook in self.hooks:
            hook.remove()

    def _tick(self):
        self._started = time.perf_counter()

    def _tock(self):
        if self.model.device.type == "cuda":
            torch.cuda.synchronize()
        self.model_seconds += time.perf_counter() - self._started

    def score(self, examples: list[Example], texts: list[tuple[str, ...]], amp: bool, batch_size: int) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.config.num_labels), np.float32)
        return predict_proba(self.model, self.tokenizer, examples, self.max_length, batch_size, words=texts,
                             amp=amp).numpy()


def visible_tokens(tokenizer, example: Example, max_length: int) -> int:
    """How many of the example's whitespace tokens reach the model: the rest lie past the
    truncation window, where no swap can change what the model sees."""
    pair = (example.context, example.text) if example.context else (example.text,)
    encoded = tokenizer(*pair, truncation=True, max_length=max_length, return_offsets_mapping=True)
    if len(encoded["input_ids"]) < max_length:
        return len(example.words)
    segment = 1 if example.context else 0
    seen = max((end for (_, end), s in zip(encoded["offset_mapping"], encoded.sequence_ids()) if s == segment),
               default=0)
    starts = np.cumsum([0] + [len(token) + 1 for token in example.words[:-1]])  # tokens joined by spaces
    return int((starts < seen).sum())


def attack_examples(victim: Victim, examples: list[Example], search: str, synonyms, seeds: list, *,
                    stopwords: str = "nltk", max_modify_rate: float = 1.0, query_budget: int | str | None = None,
                    at_once: int = 32, **search_options) -> Iterator[tuple[int, AttackResult]]:
    """Attack every example with one search; yields (its position in `examples`, its result) as
    each finishes. `at_once` examples run together: each round, every running search hands in the
    texts it needs, and all of them go to the model in batches of victim.batch_size. Results do not
    depend on at_once (up to the float rounding of a different batch composition)."""
    num_classes = victim.model.config.num_labels
    waiting, running = iter(enumerate(examples)), {}  # running: position -> (generator, its request)
    while True:
        while len(running) < at_once and (item := next(waiting, None)) is not None:
            n, example = item
            visible = example.words[:visible_tokens(victim.tokenizer, example, victim.max_length)]
            job = attack(example, search, substitutions(visible, synonyms, stopwords),
                         math.floor(max_modify_rate * word_count(example.words)), query_budget, seeds[n],
                         victim.amp, num_classes, search_options)
            running[n] = (job, next(job))
        if not running:
            return
        answers = {}
        for amp in (False, True):
            batched = [n for n, (_, r) in running.items() if not r.alone and r.amp == amp]
            texts = [t for n in batched for t in running[n][1].texts]
            probs = victim.score([examples[n] for n in batched for _ in running[n][1].texts], texts, amp,
                                 victim.batch_size)
            for n, end in zip(batched, np.cumsum([len(running[n][1].texts) for n in batched])):
                answers[n] = probs[end - len(running[n][1].texts):end]
        for n, (_, request) in running.items():
            if request.alone:
                answers[n] = victim.score([examples[n]], request.texts, False, 1)
        for n, probs in answers.items():
            try:
                running[n] = (running[n][0], running[n][0].send(probs))
            except StopIteration as done:
                del running[n]
                yield n, done.value


@dataclass(frozen=True)
class WordAttack:
    """A word search with its settings, as an attack: .attack(victim, examples, seeds, done) yields
    (position, AttackResult) for every example whose position is not in `done`, seeds[n] seeding
    example n's search. The adversaries as attacks (adversaries.PGD, adversaries.ASCC) share this
    contract, so evaluate.py runs every attack alike."""
    search: str
    synonyms: Callable[[str], list[str]]
    stopwords: str = "nltk"
    max_modify_rate: float = 1.0
    query_budget: int | str | None = None
    at_once: int = 32
    options: dict = field(default_factory=dict)  # the search's own, e.g. the genetic attack's population

    def attack(self, victim: Victim, examples: list[Example], seeds: list,
               done=frozenset()) -> Iterator[tuple[int, AttackResult]]:
        todo = [n for n in range(len(examples)) if n not in done]
        for k, result in attack_examples(victim, [examples[n] for n in todo], self.search, self.synonyms,
                                         [seeds[n] for n in todo], stopwords=self.stopwords,
                                         max_modify_rate=self.max_modify_rate, query_budget=self.query_budget,
                                         at_once=self.at_once, **self.options):
            yield todo[k], result


def summarize(records: list[dict]) -> dict:
    """The numbers every peer reports (TextAttack / TextDefender conventions), from the records of
    AttackResult.record()."""
    count = {s: sum(r["status"] == s for r in records) for s in ("successful", "failed", "skipped")}
    attacked = [r for r in records if r["status"] != "skipped"]
    successes = [r for r in records if r["status"] == "successful"]
    return {
        "examples": len(records),
        "clean_accuracy": (len(records) - count["skipped"]) / max(len(records), 1),
        "accuracy_under_attack": count["failed"] / max(len(records), 1),
        "attack_success_rate": count["successful"] / max(len(attacked), 1),
        "words_perturbed_pct": 100 * float(np.mean([len(r["changed"]) / r["words"] for r in successes])) if successes else 0.0,
        "avg_queries": float(np.mean([r["queries"] for r in attacked])) if attacked else 0.0,
        "avg_model_calls": float(np.mean([r["model_calls"] for r in attacked])) if attacked else 0.0,
        **count,
        "recheck_mismatches": sum(r["recheck_mismatch"] for r in records),
        "fp32_reruns": sum(r["fp32_rerun"] for r in records),
    }


def worst_case(lines: list[dict], searches: list[str]) -> tuple[dict, dict[int, str]]:
    """Robustness over several attacks at once, by AutoAttack's rule: an example counts as robust
    only if it was classified right and no attack broke it. `lines` are adversarial.jsonl's (each
    with its attack and example index), every example attacked by every one of `searches`. Returns
    the summary row and, for each broken example, the first attack of `searches` that broke it."""
    outcomes: dict[int, dict[str, str]] = {}
    for line in lines:
        outcomes.setdefault(line["index"], {})[line["attack"]] = line["status"]
    if any(set(statuses) != set(searches) for statuses in outcomes.values()):
        raise ValueError("the worst case needs every example attacked by every attack")
    wrong = [i for i, statuses in outcomes.items() if "skipped" in statuses.values()]
    broken_by = {i: next(a for a in searches if statuses[a] == "successful") for i, statuses in outcomes.items()
                 if i not in wrong and "successful" in statuses.values()}
    n, attacked = len(outcomes), len(outcomes) - len(wrong)
    row = {"attack": "worst case", "examples": n, "clean_accuracy": attacked / max(n, 1),
           "accuracy_under_attack": (attacked - len(broken_by)) / max(n, 1),
           "attack_success_rate": len(broken_by) / max(attacked, 1),
           "broken_first_by": {a: sum(first == a for first in broken_by.values()) for a in searches}}
    return row, broken_by


def accuracy_by_modify_rate(records: list[dict], rates: list[float]) -> list[float]:
    """Accuracy under attack had the cap on the share of changed words been each of `rates`
    (records as in adversarial.jsonl). Exact for the greedy searches (PWWS, TextFooler), whose path
    a lower cap only cuts short; for the genetic attack an estimate."""
    def robust(record: dict, rate: float) -> bool:
        return record["status"] == "failed" or (
            record["status"] == "successful" and len(record["changed"]) > math.floor(rate * record["words"]))
    return [sum(robust(r, rate) for r in records) / max(len(records), 1) for rate in rates]
