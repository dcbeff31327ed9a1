"""Word-substitution attacks, written here on nltk and numpy: how robust is a classifier, really?

An attack takes a correctly classified example and looks for synonym swaps that flip the model's
prediction, under the constraints the field reports with (REFERENCE.md section 5):
  - only words are swapped (never punctuation or stopwords), each position at most once,
  - at most `max_modify_rate` of the words change,
  - at most `query_budget` texts are scored by the model.
Synonyms come from WordNet or from the counter-fitted word vectors (Jia et al. 2019's table of
8 neighbours, or the K nearest words of the vectors themselves). The searches are PWWS (Ren et
al. 2019), TextFooler (Jin et al. 2020) and the genetic attack (Alzantot et al. 2018, as run by
Jia et al. 2019); `pgd_accuracy` measures robustness to rift.py's embedding-space adversary.

Speed is the reason this is not TextAttack: every search step sends all its candidate texts to
the model in one batched call (rift.predict_proba: length-sorted, dynamically padded, inference
mode, AMP on CUDA) through a per-example cache, so no text is scored twice. Queries are the texts
actually scored, and every success is re-checked by one plain forward pass of the final text.
"""

import hashlib
import json
import math
import re
import shutil
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from data import CACHE, Example, UsageError, data_roots, download, is_word, locate, read_text, tokenize
from rift import classify, misclassification_objective, pgd_perturbation, predict_proba

# Function words carry the grammar, not the sentiment or the entailment; swapping them mostly
# breaks the sentence, so no attack here touches them. Negations are in the list on purpose:
# "not" -> "ne" would change the meaning, which a synonym attack must not do.
STOPWORDS = frozenset("""
a about above across after afterwards again against all almost alone along already also although
always am among amongst an and another any anyhow anyone anything anyway anywhere are around as at
be became because become becomes becoming been before beforehand behind being below beside besides
between beyond both but by can cannot could did do does doing done down due during each either else
elsewhere enough etc even ever every everyone everything everywhere except few for former formerly
from further had has have having he hence her here hereafter hereby herein hereupon hers herself him
himself his how however i if in indeed into is it its itself just latter latterly least less many
may me meanwhile might mine more moreover most mostly much must my myself namely neither never
nevertheless next no nobody none noone nor not nothing now nowhere of off often on once one only
onto or other others otherwise our ours ourselves out over own per perhaps please rather re same
seem seemed seeming seems several she should since so some somehow someone something sometime
sometimes somewhere still such than that the their theirs them themselves then thence there
thereafter thereby therefore therein thereupon these they this those though through throughout thru
thus to together too toward towards under unless until up upon us very via was we well were what
whatever when whence whenever where whereafter whereas whereby wherein whereupon wherever whether
which while whither who whoever whole whom whose why will with within without would yet you your
yours yourself yourselves n't 's 're 've 'd 'll 'm
""".split())


# ---------------------------------------------------------------------------------------------
# Synonym sources: each is a function word -> candidate words, lower case, best first

# WordNet 3.0's lexicographer files (lexnames(5WN)); Debian's wordnet-base leaves this file out
# and nltk will not open WordNet without it.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body
verb.change verb.cognition verb.communication verb.competition verb.consumption verb.contact
verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative
verb.weather adj.ppl""".split()
DEBIAN_WORDNET = Path("/usr/share/wordnet")


def load_wordnet():
    """nltk's WordNet reader: from nltk's own data where `nltk.download("wordnet")` put it, else
    from Debian's wordnet-base, copied once into the cache with the lexnames file it lacks."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns that multilingual WordNet is not loaded
        try:
            from nltk.corpus import wordnet
            wordnet.ensure_loaded()
            return wordnet
        except LookupError:
            pass
        if not (DEBIAN_WORDNET / "index.noun").is_file():
            raise UsageError("WordNet not found: install Debian's wordnet-base (apt-get install wordnet-base), "
                             "or run python -c \"import nltk; nltk.download('wordnet')\" online")
        folder = CACHE / "nltk_data" / "wordnet"
        if not (folder / "lexnames").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("data", "index"):
                for pos in ("noun", "verb", "adj", "adv"):
                    shutil.copy(DEBIAN_WORDNET / f"{name}.{pos}", folder)
            for extra in [*DEBIAN_WORDNET.glob("*.exc"), DEBIAN_WORDNET / "cntlist.rev"]:
                shutil.copy(extra, folder)
            categories = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
            (folder / "lexnames").write_text("".join(
                f"{i:02d}\t{name}\t{categories[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)))
        if str(folder.parent) not in nltk.data.path:
            nltk.data.path.append(str(folder.parent))  # nltk opens files only under its data path

        class DebianWordNet(WordNetCorpusReader):
            def map_wn(self, version="wordnet"):
                # nltk maps other WordNet versions onto 3.0 through index.sense, which Debian does
                # not ship; this is 3.0 already, so there is nothing to map.
                return None

        return DebianWordNet(str(folder), None)


def wordnet_synonyms():
    """Synonyms from the synsets of the word's most frequent part of speech (by WordNet's tagged
    sense counts; all parts of speech when the word form has no counts), single-word lemmas only.

    No tagger is available offline, so the part of speech is the word's usual one: "film" keeps
    movie, picture, flick, and loses the verb senses shoot, take."""
    wordnet = load_wordnet()

    @lru_cache(maxsize=None)
    def synonyms(word: str) -> tuple[str, ...]:
        synsets = wordnet.synsets(word)
        usage = {}
        for synset in synsets:
            pos = "a" if synset.pos() == "s" else synset.pos()  # satellites are adjectives
            usage[pos] = usage.get(pos, 0) + sum(l.count() for l in synset.lemmas() if l.name().lower() == word)
        usual = max(usage, key=usage.get) if usage and max(usage.values()) > 0 else None
        found = {}
        for synset in synsets:
            if usual is None or ("a" if synset.pos() == "s" else synset.pos()) == usual:
                for lemma in synset.lemma_names():
                    if lemma.isalpha() and lemma.lower() != word:
                        found.setdefault(lemma.lower(), None)
        return tuple(found)

    return synonyms


NEIGHBOURS_URL = "https://raw.githubusercontent.com/robinjia/certified-word-sub/master/data/counterfitted_neighbors.json"
# The shared copy's sha256 (../shared/data/README.md); its 1,976,448 bytes match the file in
# robinjia/certified-word-sub@4fa78a4 at the start, middle and end. No published checksum found.
NEIGHBOURS_SHA256 = "103247143f39bd5dd66850f3a912393392641dbd98093c61e2b24a4cc8a96fb0"
VECTORS_URL = "https://github.com/nmrksic/counter-fitting/raw/master/word_vectors/counter-fitted-vectors.txt.zip"
# One source only: Mavarun/freshness-gated-ops-copilot src/ops_copilot/word_vectors.py, which
# checks its download of this URL against it.
VECTORS_SHA256 = "6f67f40c9b2e757695b3af2209bcd4393377962ca440dd4fad542937d01e7d56"


def neighbours_from_vectors(path: Path, k: int, min_cos: float) -> dict[str, list[str]]:
    """For every word of a counter-fitted vector file (`word v1 ... v300` per line, or a .zip of
    one), its k nearest words by cosine, keeping those at cosine >= min_cos. Computed once and
    cached beside the other downloads (TextAttack's textfooler preset: k 50, cosine 0.5)."""
    stat = path.resolve().stat()
    identity = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cached = CACHE / "synonyms" / f"{path.stem}-{identity}-k{k}-cos{min_cos}.json"
    if cached.is_file():
        return json.loads(read_text(cached))
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                member = archive.namelist()[0]
                lines = read_text(f"{path}/{member}", archive.read(member)).splitlines()
        else:
            lines = read_text(path).splitlines()
    except (zipfile.BadZipFile, IndexError) as err:
        raise UsageError(f"{path} is not a counter-fitted vector file (text, or a zip of one): {err}") from None
    if not lines:
        raise UsageError(f"{path} is empty")
    words, rows = [], []
    for number, line in enumerate(lines, 1):
        parts = line.rstrip().split(" ")
        try:
            rows.append(np.asarray(parts[1:], dtype=np.float32))
        except ValueError:
            raise UsageError(f"{path}:{number}: not a word followed by numbers") from None
        if rows[-1].shape != rows[0].shape or not rows[-1].size:
            raise UsageError(f"{path}:{number}: {rows[-1].size} numbers where line 1 has {rows[0].size}")
        words.append(parts[0])
    vectors = np.stack(rows)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    table = {}
    for start in range(0, len(words), 1024):  # (1024, V) similarities at a time: bounded memory
        cosines = vectors[start:start + 1024] @ vectors.T
        for row, word_index in enumerate(range(start, min(start + 1024, len(words)))):
            cosines[row, word_index] = -1.0  # a word is not its own neighbour
            nearest = np.argpartition(-cosines[row], min(k, len(words) - 1))[:k]
            nearest = nearest[np.argsort(-cosines[row, nearest])]
            table[words[word_index]] = [words[j] for j in nearest if cosines[row, j] >= min_cos]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(table))
    return table


def find_or_download(names: tuple[str, ...], url: str, sha256: str, data_dir: str | None, what: str) -> Path:
    """The first of `names` (paths relative to a data root) under --data-dir, $RIFT_DATA or the
    cache; else the public original, downloaded into the cache as names[0] and checked against
    its pinned sha256."""
    found = [path for path in (locate(name, data_dir) for name in names) if path]
    if found:
        return found[0]
    try:
        return download(url, CACHE / names[0], sha256)
    except ConnectionError as err:
        roots = ", ".join(str(root) for root in data_roots(data_dir))
        raise UsageError(f"no {names[0]} under {roots} and the download failed ({err}): pass --synonyms-path "
                         f"to {what}, or --data-dir / RIFT_DATA to a folder holding {names[0]}") from None


def counterfitted_synonyms(path: str | None = None, data_dir: str | None = None) -> tuple:
    """(synonyms, source): Jia et al. (2019)'s table of counter-fitted neighbours (JSON word ->
    up to 8 neighbours, nearest first), from `path`, else synonyms/counterfitted_neighbors.json
    under --data-dir, $RIFT_DATA or the cache, else downloaded from Jia et al.'s repository."""
    path = Path(path) if path else find_or_download(("synonyms/counterfitted_neighbors.json",), NEIGHBOURS_URL,
                                                    NEIGHBOURS_SHA256, data_dir, "the neighbour table")
    if not path.is_file():
        raise UsageError(f"synonym file {path} does not exist")
    try:
        table = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not a JSON neighbour table ({err})") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise UsageError(f"{path} must map each word to a list of neighbours")
    return (lambda word: tuple(table.get(word, ()))), {"synonyms": "counterfitted", "path": str(path)}


def vector_synonyms(path: str | None = None, data_dir: str | None = None, k: int = 50, min_cos: float = 0.5) -> tuple:
    """(synonyms, source): the k nearest words with cosine >= min_cos in the counter-fitted vectors
    (Mrksic et al. 2016; TextFooler's preset is k 50, cosine 0.5), from `path`, else
    synonyms/counter-fitted-vectors.txt(.zip) under --data-dir, $RIFT_DATA or the cache, else
    downloaded from the authors' repository."""
    path = Path(path) if path else find_or_download(
        ("synonyms/counter-fitted-vectors.txt.zip", "synonyms/counter-fitted-vectors.txt"), VECTORS_URL,
        VECTORS_SHA256, data_dir, "the counter-fitted vectors")
    if not path.is_file():
        raise UsageError(f"vector file {path} does not exist")
    table = neighbours_from_vectors(path, k, min_cos)
    source = {"synonyms": "counterfitted-vectors", "path": str(path), "k": k, "min_cos": min_cos}
    return (lambda word: tuple(table.get(word, ()))), source


# ---------------------------------------------------------------------------------------------
# Where a text may change

AFFIXES = re.compile(r"^(\W*)(.*?)(\W*)$")  # "(brilliant," -> "(", "brilliant", ","


def match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def substitutions(words: tuple[str, ...], synonyms) -> dict[int, list[str]]:
    """For each position that may change, its replacement tokens: the word's synonyms, with the
    word's casing and surrounding punctuation. Stopwords and punctuation never change."""
    options = {}
    for i, token in enumerate(words):
        prefix, core, suffix = AFFIXES.match(token).groups()
        if not is_word(core) or core.lower() in STOPWORDS or token.lower() in STOPWORDS:  # "'s" too
            continue
        swaps = [prefix + match_case(s, core) + suffix for s in synonyms(core.lower()) if s != core.lower()]
        if swaps:
            options[i] = swaps
    return options


def word_count(words: tuple[str, ...]) -> int:
    """Words as the modification rate counts them: punctuation tokens are not words."""
    return sum(map(is_word, words))


def replace(words: tuple[str, ...], i: int, token: str) -> tuple[str, ...]:
    return words[:i] + (token,) + words[i + 1:]


def changed_positions(original: tuple[str, ...], words: tuple[str, ...]) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(original, words)) if a != b]


# ---------------------------------------------------------------------------------------------
# The model under attack

class Victim:
    """The model as an attack sees it: word tuples in, class probabilities out. It scores only
    texts it has not scored for this example, counts them (the queries), stops at the budget, and
    times the model's forward passes apart from everything else. Use it in a `with` block: the
    timing hooks come off the model at the end."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 64, amp: bool = False):
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

    def start(self, example: Example, budget: int) -> None:
        self.example, self.budget, self.queries, self.cache = example, budget, 0, {}

    @property
    def exhausted(self) -> bool:
        return self.queries >= self.budget

    def probs(self, texts: list[tuple[str, ...]]) -> np.ndarray:
        """Probabilities (n, C) for the first n texts the budget allows (n <= len(texts)); callers
        zip them with their texts, so a budget that runs out mid-step simply shortens the step."""
        new = [t for t in dict.fromkeys(texts) if t not in self.cache][:max(self.budget - self.queries, 0)]
        if new:
            scored = predict_proba(self.model, self.tokenizer, [self.example] * len(new), self.max_length,
                                   self.batch_size, words=new, amp=self.amp).numpy()
            self.cache.update(zip(new, scored))
            self.queries += len(new)
        affordable = next((n for n, t in enumerate(texts) if t not in self.cache), len(texts))
        scored = [self.cache[t] for t in texts[:affordable]]
        return np.stack(scored) if scored else np.zeros((0, self.model.config.num_labels))


# ---------------------------------------------------------------------------------------------
# Searches: each returns the best text it found (the original when it found nothing better)

def pwws(victim: Victim, words, label: int, options: dict, max_changes: int, rng) -> tuple[str, ...]:
    """Probability Weighted Word Saliency (Ren et al. 2019). Rank positions by
    softmax(saliency)_i * (best swap's drop of p(y)), where saliency is the drop of p(y) when the
    word becomes the unknown token, then apply each position's best swap in that order until the
    label flips. A swap that does not lower p(y) on the original text is skipped."""
    positions = list(options)
    p_y = victim.probs([words])[0, label]
    unknown = [replace(words, i, victim.tokenizer.unk_token or "") for i in positions]  # "" = deleted
    swaps = [(i, token) for i in positions for token in options[i]]
    scores = victim.probs(unknown + [replace(words, i, token) for i, token in swaps])
    if len(scores) < len(unknown) + len(swaps):
        return words  # the budget does not cover the ranking
    saliency = p_y - scores[:len(unknown), label]
    best_drop, best_token = {}, {}
    for (i, token), p in zip(swaps, scores[len(unknown):, label]):
        if p_y - p > best_drop.get(i, -np.inf):
            best_drop[i], best_token[i] = p_y - p, token
    weights = np.exp(saliency - saliency.max())
    ranking = sorted(range(len(positions)), key=lambda n: -weights[n] / weights.sum() * best_drop[positions[n]])
    current, changes = words, 0
    for n in ranking:
        i = positions[n]
        if changes >= max_changes or best_drop[i] <= 0:
            break
        p = victim.probs([replace(current, i, best_token[i])])
        if len(p) == 0:  # out of budget
            break
        current, changes = replace(current, i, best_token[i]), changes + 1
        if p[0].argmax() != label:
            break
    return current


def textfooler(victim: Victim, words, label: int, options: dict, max_changes: int, rng) -> tuple[str, ...]:
    """TextFooler (Jin et al. 2020) without its sentence encoder and POS tagger (none offline).
    Word importance = the change of the prediction when the word is deleted; then, most important
    first, swap in the synonym that flips the label (the nearest such neighbour), else the one that
    lowers p(y) most, if any does."""
    positions = list(options)
    p0 = victim.probs([words])[0]
    deleted = victim.probs([words[:i] + words[i + 1:] for i in positions])
    if len(deleted) < len(positions):
        return words
    importance = p0[label] - deleted[:, label]
    moved = deleted.argmax(1) != label  # deletion alone flips: add how much the new class gained
    new_class = deleted[moved].argmax(1)
    importance[moved] += deleted[moved, new_class] - p0[new_class]
    current, p_current, changes = words, p0[label], 0
    for n in np.argsort(-importance, kind="stable"):
        if changes >= max_changes or victim.exhausted:
            break
        i = positions[n]
        candidates = [replace(current, i, token) for token in options[i]]
        p = victim.probs(candidates)
        flips = [j for j in range(len(p)) if p[j].argmax() != label]
        if flips:
            return candidates[flips[0]]  # neighbours come nearest first: the most similar flip
        if len(p) and p[:, label].min() < p_current:
            best = int(p[:, label].argmin())
            current, p_current, changes = candidates[best], p[best, label], changes + 1
    return current


def genetic(victim: Victim, words, label: int, options: dict, max_changes: int, rng,
            population: int = 60, generations: int = 40, temperature: float = 0.3) -> tuple[str, ...]:
    """The genetic attack of Alzantot et al. (2018) as Jia et al. (2019) run it (without its
    language model, which is not available offline). Fitness = 1 - p(y). Each generation keeps
    its best member (elitism), draws parent pairs with probability softmax(fitness / temperature),
    crosses them uniformly word by word, and mutates every child: at one random position not yet
    changed (a changed one once the cap is reached), try every synonym and keep the fittest."""
    positions = list(options)

    def mutate(members: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        proposals = []
        for member in members:
            changed = set(changed_positions(words, member))
            fresh = [i for i in positions if i not in changed]
            pool = fresh if fresh and len(changed) < max_changes else sorted(changed)
            i = pool[rng.integers(len(pool))]
            proposals.append([replace(member, i, token) for token in options[i] if token != member[i]] or [member])
        flat = [text for texts in proposals for text in texts]
        fitness = 1 - victim.probs(flat)[:, label] if flat else np.zeros(0)
        mutated, offset = [], 0
        for member, texts in zip(members, proposals):
            scored = fitness[offset:offset + len(texts)]
            mutated.append(texts[int(scored.argmax())] if len(scored) == len(texts) else member)
            offset += len(texts)
        return mutated

    def within_cap(child: tuple[str, ...]) -> tuple[str, ...]:
        changed = changed_positions(words, child)
        for i in rng.permutation(changed)[:max(len(changed) - max_changes, 0)]:
            child = replace(child, int(i), words[i])
        return child

    members = mutate([words] * population)
    best = words
    for _ in range(generations):
        p = victim.probs(members)
        if len(p) < len(members):
            break
        fitness = 1 - p[:, label]
        flipped = np.flatnonzero(p.argmax(1) != label)  # with 3+ classes the fittest may not be flipped
        if len(flipped):
            return members[int(flipped[fitness[flipped].argmax()])]
        best = members[int(fitness.argmax())]
        if victim.exhausted:
            break
        parents = np.exp((fitness - fitness.max()) / temperature)
        pairs = rng.choice(len(members), size=(population - 1, 2), p=parents / parents.sum())
        children = [within_cap(tuple(members[a][i] if rng.random() < 0.5 else members[b][i] for i in range(len(words))))
                    for a, b in pairs]
        members = [best] + mutate(children)
    return best


SEARCH_FUNCTIONS = {"pwws": pwws, "textfooler": textfooler, "genetic": genetic}
SEARCHES = tuple(SEARCH_FUNCTIONS)


# ---------------------------------------------------------------------------------------------
# Running an attack on one example

@dataclass
class AttackResult:
    status: str  # "skipped" (misclassified before any attack), "successful" or "failed"
    label: int
    original: tuple[str, ...]
    perturbed: tuple[str, ...]
    changed: list[int]
    words: int  # words that count for the modification rate (punctuation does not)
    probs_before: list[float]
    probs_after: list[float]
    queries: int
    seconds: float
    context: str | None = None
    recheck_mismatch: bool = field(default=False)  # the search's success did not survive the re-check


def attack_example(victim: Victim, example: Example, search: str, synonyms, max_modify_rate: float,
                   query_budget: int | None, rng, **search_options) -> AttackResult:
    """Attack one example with one search (search_options: e.g. the genetic population)."""
    started = time.perf_counter()
    words = example.words
    words_counted = word_count(words)
    victim.start(example, query_budget or 50 * max(words_counted, 1))  # TextDefender's budget: 50 x words
    before = victim.probs([words])[0]
    if before.argmax() != example.label:
        return AttackResult("skipped", example.label, words, words, [], words_counted, before.tolist(),
                            before.tolist(), victim.queries, time.perf_counter() - started, example.context)
    options = substitutions(words, synonyms)
    max_changes = math.floor(max_modify_rate * words_counted)
    perturbed = (SEARCH_FUNCTIONS[search](victim, words, example.label, options, max_changes, rng, **search_options)
                 if options and max_changes > 0 else words)
    after = victim.cache[perturbed]
    status, mismatch = "failed", False
    if after.argmax() != example.label:
        # One plain forward pass of the final text alone: a success must not depend on batching.
        after = predict_proba(victim.model, victim.tokenizer, [example], victim.max_length, 1,
                              words=[perturbed], amp=victim.amp)[0].numpy()
        status, mismatch = ("successful", False) if after.argmax() != example.label else ("failed", True)
    return AttackResult(status, example.label, words, perturbed, changed_positions(words, perturbed), words_counted,
                        before.tolist(), after.tolist(), victim.queries, time.perf_counter() - started,
                        example.context, mismatch)


def summarize(results: list[AttackResult]) -> dict:
    """The numbers every peer reports (TextAttack / TextDefender conventions)."""
    count = {s: sum(r.status == s for r in results) for s in ("successful", "failed", "skipped")}
    attacked = [r for r in results if r.status != "skipped"]
    successes = [r for r in results if r.status == "successful"]
    return {
        "examples": len(results),
        "clean_accuracy": (len(results) - count["skipped"]) / max(len(results), 1),
        "accuracy_under_attack": count["failed"] / max(len(results), 1),
        "attack_success_rate": count["successful"] / max(len(attacked), 1),
        "words_perturbed_pct": 100 * float(np.mean([len(r.changed) / r.words for r in successes])) if successes else 0.0,
        "avg_queries": float(np.mean([r.queries for r in attacked])) if attacked else 0.0,
        **count,
        "recheck_mismatches": sum(r.recheck_mismatch for r in results),
        "seconds_per_example": float(np.mean([r.seconds for r in results])) if results else 0.0,
    }


def accuracy_by_modify_rate(records: list[dict], rates: list[float]) -> list[float]:
    """Accuracy under attack had the cap on the share of changed words been each of `rates`
    (records as in adversarial.jsonl). Exact for the greedy searches (PWWS, TextFooler), whose path
    a lower cap only cuts short; for the genetic attack an estimate."""
    def robust(record: dict, rate: float) -> bool:
        return record["status"] == "failed" or (
            record["status"] == "successful" and len(record["changed"]) > math.floor(rate * record["words"]))
    return [sum(robust(r, rate) for r in records) / max(len(records), 1) for rate in rates]


# ---------------------------------------------------------------------------------------------
# The embedding-space adversary, as an evaluation

def pgd_accuracy(model, tokenizer, examples: list[Example], max_length: int, eps: float, steps: int,
                 norm: str, batch_size: int = 64, amp: bool = False) -> list[bool]:
    """For each example: still classified correctly after rift.py's PGD at radius eps, aimed at a
    wrong label (the training adversary's KL goal would leave many examples standing: it is as
    happy to make a prediction more confident as to flip it). eps 0 gives clean accuracy."""
    device = next(model.parameters()).device
    model.eval()
    robust = []
    for start in range(0, len(examples), batch_size):
        batch = tokenize(tokenizer, examples[start:start + batch_size], max_length).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
            objective = misclassification_objective(batch["labels"])
            delta = pgd_perturbation(model, embeds, batch, objective, eps, steps, norm) if eps > 0 else 0
            with torch.no_grad():
                logits, _ = classify(model, embeds + delta, batch)
        robust += (logits.argmax(-1) == batch["labels"]).tolist()
    return robust
