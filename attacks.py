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
    neither (TextDefender: 30%, 50x),
  - an optional meaning check (similarity.py): a candidate is queried only if a frozen sentence
    encoder finds it close to the text it came from, as TextAttack's sentence-encoder constraint
    (USE there, MiniLM here). TextAttack's PWWS has none (TextFooler's recipe and TextDefender: 0.84).
Queries are counted as TextAttack counts them (GoalFunction.get_results): every text a search hands
in counts, whether the cache knows it or not, after the list is cut to what is left of the budget,
and the original's first query counts too; the search ends when the budget is spent. A second
count, `model_calls`, keeps the texts the model really scored, the cache's saving.
A stricter variant that keeps the meaning closer (`stopwords="extended"`, and WordNet's usual part
of speech in synonyms.py) is there on request, never by default.

The searches run many examples at once against one model in victim.py.
"""

import random
import re
import string
from typing import Iterator

import numpy as np
import torch

from data import Example
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
# from the true label. Before a search scores the candidates of a word, `keep` drops those that
# change the meaning too much (similarity.MeaningCheck, where one is set), as TextAttack filters a
# transformation's texts by its constraints: `kept = yield from keep(groups)`, each group (the text
# changed, the word's slot, its candidates) answered by (the candidates kept, their similarity to
# their reference). The [UNK] and deletion texts that rank the words are no candidates: unchecked.

def unchecked(groups: list) -> Iterator:
    """`keep` without a meaning check: every candidate kept, each as similar as can be (1)."""
    yield from ()  # a generator like the check that embeds, so searches call both with `yield from`
    return [(texts, np.ones(len(texts))) for _, _, texts in groups]


def most_similar_success(goal: np.ndarray, fooled: np.ndarray, similarity: np.ndarray) -> int:
    """TextAttack's pick once a greedy step fools the model (GreedyWordSwapWIR.perform_search): in
    order of goal score (ties in candidate order), of the successes ranked before the first
    candidate that is none, the one most similar to its reference, the first of equals. Unchecked,
    every similarity is 1: the best-scoring success."""
    chosen = None
    for j in np.argsort(-goal, kind="stable"):
        if not fooled[j]:
            break
        if chosen is None or similarity[j] > similarity[chosen]:
            chosen = j
    return int(chosen)


def greedy_step(score, keep, current: tuple[str, ...], slot: Slot, candidates: list, label: int, current_goal: float):
    """One word's step of a greedy search (PWWS, DeepWordBug): its candidates on the current text
    that keep the meaning, scored; the best one is taken if it beats `current_goal`. Returns (the
    text to go on from, its goal score, whether the search ends: the model is fooled, then with the
    success most_similar_success picks, or the budget ran out)."""
    [(candidates, similarity)] = yield from keep([(current, slot, candidates)])
    if not candidates:
        return current, current_goal, False
    p = yield from score(candidates)
    if not len(p):
        return current, current_goal, True  # out of budget
    goal, fooled = 1 - p[:, label], p.argmax(1) != label
    best = int(np.argmax(goal))  # the first best: candidates come in TextAttack's order
    if goal[best] > current_goal:
        if fooled[best]:
            return candidates[most_similar_success(goal, fooled, similarity)], goal[best], True
        current, current_goal = candidates[best], goal[best]
    return current, current_goal, len(p) < len(candidates)  # a budget run out within the step ends it


def pwws(score, words, label: int, start, options: dict, max_changes: int, rng, keep=unchecked):
    """Probability Weighted Word Saliency (Ren et al. 2019), as TextAttack's GreedyWordSwapWIR
    ("weighted-saliency") runs it:
      1. rank the words by softmax(saliency) x the best goal score one swap of the word reaches on
         the original text, where a word's saliency is the goal score with the word made [UNK];
      2. greedily, in that order, score every swap of the next word on the *current* text and keep
         the best if it beats the current goal score; stop at the first misclassified text.
    Every word that may change is made [UNK] (a word without candidates too: its best swap counts
    0), so the softmax, the order and the queries are TextAttack's; the swaps that rank a word are
    those `keep` keeps. Out of budget: a ranking cut short returns the original; a greedy step cut
    short still keeps its best, then the search ends."""
    positions = list(options)
    unknown = [swap(words, slot, UNK) for slot in positions]
    kept = yield from keep([(words, slot, [swap(words, slot, c) for c in options[slot]]) for slot in positions])
    swaps = [text for texts, _ in kept for text in texts]
    p = yield from score(unknown + swaps)
    if len(p) < len(unknown) + len(swaps):
        return words
    goal = 1 - p[:, label]
    saliency = torch.softmax(torch.tensor(goal[:len(unknown)]), 0).numpy()  # float32, as TextAttack
    ends = np.cumsum([len(texts) for texts, _ in kept]) + len(unknown)
    best_swap = np.array([goal[end - len(texts):end].max() if texts else 0.0
                          for (texts, _), end in zip(kept, ends)], np.float64)
    order = np.argsort(-(saliency * best_swap))  # numpy's default sort, as TextAttack's
    current, current_goal, changes = words, 1 - start[label], 0
    for n in [n for n in order if options[positions[n]]]:
        if changes >= max_changes:
            break
        slot = positions[n]
        step, current_goal, ends_here = yield from greedy_step(
            score, keep, current, slot, [swap(current, slot, c) for c in options[slot]], label, current_goal)
        current, changes = step, changes + (step != current)
        if ends_here:
            break
    return current


def textfooler(score, words, label: int, start, options: dict, max_changes: int, rng, keep=unchecked):
    """TextFooler (Jin et al. 2020) without its POS tagger (none offline); its sentence encoder is
    the meaning check `keep`, where one is set. Word importance = the change of the prediction when
    the word is deleted; then, most important first, swap in the synonym that flips the label (the
    one most similar to its reference, as the paper picks; unchecked, the nearest neighbour), else
    the one that lowers p(y) most, if any does. As in TextAttack's ranking, every word that may
    change is deleted once, with or without candidates."""
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
        slot = positions[n]
        [(candidates, similarity)] = yield from keep([(current, slot, [swap(current, slot, c) for c in options[slot]])])
        if not candidates:
            continue
        p = yield from score(candidates)
        flips = np.flatnonzero(p.argmax(1) != label)
        if len(flips):
            return candidates[flips[int(np.argmax(similarity[flips]))]]  # ties: neighbours come nearest first
        if len(p) < len(candidates):
            break  # out of budget
        if p[:, label].min() < p_current:
            best = int(p[:, label].argmin())
            current, p_current, changes = candidates[best], p[best, label], changes + 1
    return current


POPULATION, GENERATIONS = 60, 40  # the genetic attack's, as Alzantot et al. and the paper run it


def genetic(score, words, label: int, start, options: dict, max_changes: int, rng, keep=unchecked,
            population: int = POPULATION, generations: int = GENERATIONS, temperature: float = 0.3):
    """The genetic attack of Alzantot et al. (2018) as Jia et al. (2019) run it (without its
    language model, which is not available offline). Fitness = 1 - p(y). Each generation keeps
    its best member (elitism), draws parent pairs with probability softmax(fitness / temperature),
    crosses them uniformly word by word, and mutates every child: at one random word not yet
    changed (a changed one once the cap is reached), try every synonym `keep` keeps (the member is
    the current text) and keep the fittest. The members' scores are those of their mutation
    (TextAttack keeps each member's result too), so no member is queried twice; `start` is not
    needed."""
    positions = [slot for slot in options if options[slot]]
    if not positions:
        return words  # nothing to mutate

    def changed(member) -> list[Slot]:
        return [slot for slot in positions if word_at(member, slot) != word_at(words, slot)]

    def mutate(members: list):
        groups = []
        for member in members:
            done = changed(member)
            fresh = [slot for slot in positions if slot not in done]
            pool = fresh if fresh and len(done) < max_changes else done
            slot = pool[rng.integers(len(pool))]
            groups.append((member, slot, [swap(member, slot, c) for c in options[slot] if c != word_at(member, slot)]))
        kept = yield from keep(groups)
        proposals = [texts or [member] for (member, _, _), (texts, _) in zip(groups, kept)]
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


def deepwordbug(score, words, label: int, start, options: dict, max_changes: int, rng, keep=unchecked,
                max_edit_distance: int = 30):
    """DeepWordBug (Gao et al. 2018) as TextAttack 0.3.11 runs it (`DeepWordBugGao2018`):
      1. rank the words that may change by the goal score with the word made [UNK] (GreedyWordSwapWIR's
         "unk" ranking);
      2. in that order, draw the word's four character edits (character_edits) on the current
         text, keep those whose text stays within `max_edit_distance` characters of the original
         (Levenshtein, LevenshteinEditDistance(30)) and that `keep` keeps, and take the best if it
         beats the current goal score; stop at the first misclassified text.
    `options` only says which words may change (no stopword, inside the window). An edit may leave
    one of '-_*@ at the word's edge, where it stops being part of the word ("n't" -> "'nt" reads as
    the word "nt"), as TextAttack reads it too. The edits are random: outcomes match TextAttack's
    in rate, not one by one."""
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
        edits = [e for e in dict.fromkeys(character_edits(word, rng)) if e != word and len(word_spans(e)) == 1]
        # Exact, and cheap where the bound already allows it: the full distance only past it.
        edits = [e for e in edits if bound + edit_distance(word, e) <= max_edit_distance or
                 edit_distance(original, " ".join(swap(current, positions[n], e))) <= max_edit_distance]
        if not edits:
            continue
        step, current_goal, ends_here = yield from greedy_step(
            score, keep, current, positions[n], [swap(current, positions[n], e) for e in edits], label, current_goal)
        if step != current:
            token = positions[n][0]  # the whole token: the edit may have left a character outside the word
            bound += edit_distance(current[token], step[token])
            current, changes = step, changes + 1
        if ends_here:
            break
    return current


SEARCHES = {"pwws": pwws, "textfooler": textfooler, "genetic": genetic, "deepwordbug": deepwordbug}
