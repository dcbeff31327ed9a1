"""The searches of attacks.py run against a model, many examples at once: how robust is a
classifier, really? The model as the attacks see it (Victim), one example's attack with its queries
counted and budgeted as TextAttack counts them (Tally, attack), many examples attacked together
(attack_examples), the contract every attack keeps (WordAttack: adversaries.PGD and ASCC keep it
too), and the numbers every peer reports (summarize, worst_case, accuracy_by_modify_rate).

Speed is why this is not TextAttack. Each search is a generator: it yields the texts it needs
scored and receives their probabilities. So many examples are attacked at once and every model
call carries the candidates of many examples (length-sorted, dynamically padded, inference mode);
a per-example cache scores no text twice; and a word past the model's truncation window is never
queried, since swapping it cannot change what the model sees. The search may run under bf16
autocast; its verdict may not: every success is re-checked alone in fp32, and a bf16 success
that fp32 does not confirm is searched again, from the start, in fp32.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from attacks import SEARCHES, changed_words, substitutions, unchecked, word_count
from data import Example
from rift import predict_proba

# ---------------------------------------------------------------------------------------------
# Running attacks: one generator per example, many examples at once

class Request(NamedTuple):
    texts: list  # word tuples to score
    amp: bool  # under bf16 autocast
    alone: bool  # fp32, one text per forward pass: a verdict that depends on no batch


class Embed(NamedTuple):
    texts: list[str]  # for the meaning check's sentence encoder, which answers their embeddings (n, H)


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
           seed, amp: bool, num_classes: int, search_options: dict, keep=unchecked):
    """One example's attack, as a generator of Requests (and of Embeds, for `keep`, the example's
    meaning check) that returns its AttackResult."""
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
                                                options, max_changes, rng, keep=keep, **search_options)
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
                    at_once: int = 32, meaning=None, **search_options) -> Iterator[tuple[int, AttackResult]]:
    """Attack every example with one search; yields (its position in `examples`, its result) as
    each finishes. `at_once` examples run together: each round, every running search hands in the
    texts it needs, and all of them go to the model in batches of victim.batch_size (and the texts
    `meaning`, a similarity.MeaningCheck, needs embedded to its encoder). Results do not depend on
    at_once (up to the float rounding of a different batch composition)."""
    num_classes = victim.model.config.num_labels
    waiting, running = iter(enumerate(examples)), {}  # running: position -> (generator, its request)
    while True:
        while len(running) < at_once and (item := next(waiting, None)) is not None:
            n, example = item
            visible = example.words[:visible_tokens(victim.tokenizer, example, victim.max_length)]
            job = attack(example, search, substitutions(visible, synonyms, stopwords),
                         math.floor(max_modify_rate * word_count(example.words)), query_budget, seeds[n],
                         victim.amp, num_classes, search_options, meaning.keep(example) if meaning else unchecked)
            running[n] = (job, next(job))
        if not running:
            return
        answers = {}
        embedding = [n for n, (_, r) in running.items() if isinstance(r, Embed)]
        if embedding:
            vectors = meaning.encoder.embed([t for n in embedding for t in running[n][1].texts])
            answers |= dict(zip(embedding, pieces(vectors, [len(running[n][1].texts) for n in embedding])))
        for amp in (False, True):
            batched = [n for n, (_, r) in running.items() if isinstance(r, Request) and not r.alone and r.amp == amp]
            texts = [t for n in batched for t in running[n][1].texts]
            probs = victim.score([examples[n] for n in batched for _ in running[n][1].texts], texts, amp,
                                 victim.batch_size)
            answers |= dict(zip(batched, pieces(probs, [len(running[n][1].texts) for n in batched])))
        for n, (_, request) in running.items():
            if isinstance(request, Request) and request.alone:
                answers[n] = victim.score([examples[n]], request.texts, False, 1)
        for n, probs in answers.items():
            try:
                running[n] = (running[n][0], running[n][0].send(probs))
            except StopIteration as done:
                del running[n]
                yield n, done.value


def pieces(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """`rows` cut into consecutive pieces of the given sizes: each request's share of a batched answer."""
    return np.split(rows, np.cumsum(sizes)[:-1]) if sizes else []


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
    meaning: object = None  # a similarity.MeaningCheck its searches apply to their candidates; None: none

    def attack(self, victim: Victim, examples: list[Example], seeds: list,
               done=frozenset()) -> Iterator[tuple[int, AttackResult]]:
        todo = [n for n in range(len(examples)) if n not in done]
        for k, result in attack_examples(victim, [examples[n] for n in todo], self.search, self.synonyms,
                                         [seeds[n] for n in todo], stopwords=self.stopwords,
                                         max_modify_rate=self.max_modify_rate, query_budget=self.query_budget,
                                         at_once=self.at_once, meaning=self.meaning, **self.options):
            yield todo[k], result


def summarize(records: list[dict]) -> dict:
    """The numbers every peer reports (TextAttack / TextDefender conventions), from the records of
    AttackResult.record()."""
    count = {s: sum(r["status"] == s for r in records) for s in ("successful", "failed", "skipped")}
    attacked = [r for r in records if r["status"] != "skipped"]
    successes = [r for r in records if r["status"] == "successful"]
    similar = [r["similarity"] for r in successes if r.get("similarity") is not None]  # set at the end, on texts
    return {
        "examples": len(records),
        "clean_accuracy": (len(records) - count["skipped"]) / max(len(records), 1),
        "accuracy_under_attack": count["failed"] / max(len(records), 1),
        "attack_success_rate": count["successful"] / max(len(attacked), 1),
        "words_perturbed_pct": 100 * float(np.mean([len(r["changed"]) / r["words"] for r in successes])) if successes else 0.0,
        "mean_similarity": float(np.mean(similar)) if similar else None,
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
