"""Synonym sources for the word-substitution attacks: each gives (synonyms, source), a function
word -> candidate words and the record of where they came from (results.json's synonym_source).

    wordnet        WordNet 3.0 (Miller 1995) through nltk, as TextAttack's WordSwapWordNet reads it:
                   every synset of the word, single-word lemma names as WordNet spells them
    counterfitted  Jia et al. (2019)'s table of at most 8 counter-fitted neighbours per word, the
                   table of ASCC and RIFT
    vectors        the k nearest words of the counter-fitted vectors (Mrksic et al. 2016) themselves,
                   TextFooler's source (k 50, cosine >= 0.5)

WordNet comes from nltk's own data when `nltk.download("wordnet")` has put it there, else from
Debian's wordnet-base (these machines reach no download server); the table and the vectors are
found under --data-dir, $RIFT_DATA or the cache, else downloaded from their authors' repositories.
A source only proposes words: attacks.py decides where a text may change and which proposals fit
(the stopword lists it reads are kept here, beside the other word lists).
"""

import hashlib
import json
import shutil
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from data import CACHE, UsageError, data_roots, download, locate, read_text

# NLTK's English stopwords (nltk_data's corpora/stopwords/english, the classic 179 words), which
# TextAttack's StopwordModification reads; written out here because that corpus needs a download.
NLTK_STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom
this that that'll these those am is are was were be been being have has had having do does did doing a an the
and but if or because as until while of at by for with about against between into through during before after
above below to from up down in out on off over under again further then once here there when where why how all
any both each few more most other some such no nor not only own same so than too very s t can will just don
don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn
hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())

# The stricter variant adds more function words ("even", "well", "never", "one" ...), which carry
# the grammar rather than the sentiment or the entailment: swapping them mostly breaks the sentence.
EXTENDED_STOPWORDS = NLTK_STOPWORDS | frozenset("""
about above across after afterwards again against all almost alone along already also although
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

STOPWORDS = {  # word -> is it a stopword; TextAttack matches as spelled, the stricter list in any case
    "nltk": lambda word: word in NLTK_STOPWORDS,
    "extended": lambda word: word.lower() in EXTENDED_STOPWORDS,
}

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


WORDNET_POS = ("all", "usual")


def wordnet_synonyms(pos: str = "all") -> tuple:
    """(synonyms, source): WordNet's synonyms of a word, as the word is spelled in the text.

    pos "all" is TextAttack's WordSwapWordNet (PWWS's source): the lemma names of every synset that
    nltk finds for the word (any part of speech; nltk lower-cases it and its morphy finds the base
    of an inflected form: "films" -> film, movie, picture ...), as WordNet spells them, leaving out
    the word itself and multi-word lemmas ("ice_cream"). pos "usual" keeps the meaning closer: only
    the synsets of the word's most frequent part of speech (by WordNet's tagged sense counts; all
    when the form has none), alphabetic lemmas only, lower-cased. No tagger is available offline,
    so "usual" is the best stand-in for the word's part of speech in its sentence: "film" keeps
    movie, picture, flick, and loses the verb senses shoot, take."""
    if pos not in WORDNET_POS:
        raise UsageError(f"unknown WordNet part-of-speech rule {pos!r}: use one of {', '.join(WORDNET_POS)}")
    wordnet = load_wordnet()

    @lru_cache(maxsize=None)
    def every_sense(word: str) -> tuple[str, ...]:
        found = {lemma for synset in wordnet.synsets(word) for lemma in synset.lemma_names()
                 if lemma != word and "_" not in lemma}
        return tuple(sorted(found))

    @lru_cache(maxsize=None)
    def usual_sense(word: str) -> tuple[str, ...]:
        word = word.lower()
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

    return (every_sense if pos == "all" else usual_sense), {"synonyms": "wordnet", "pos": pos}


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
    return (lambda word: tuple(table.get(word.lower(), ()))), {"synonyms": "counterfitted", "path": str(path)}


VECTOR_NEIGHBOURS, VECTOR_MIN_COS = 50, 0.5  # TextFooler's preset: the 50 nearest words, at cosine >= 0.5


def vector_synonyms(path: str | None = None, data_dir: str | None = None, k: int = VECTOR_NEIGHBOURS,
                    min_cos: float = VECTOR_MIN_COS) -> tuple:
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
    return (lambda word: tuple(table.get(word.lower(), ()))), source
