"""The meaning check: does an adversarial text still say what the original said?

TextFooler (Jin et al. 2020) and the benchmarks that followed it keep a candidate only where the
Universal Sentence Encoder (USE) finds it close to the text it came from. USE is a TensorFlow Hub
model, out of reach offline; here a frozen copy of the pre-trained all-MiniLM-L6-v2 stands in,
embedding a text with its own pooling (1_Pooling: the mean of its last token states) and comparing
two embeddings by their cosine. MiniLM is not USE: one threshold draws a different line under
each, so a threshold made for USE names that recipe's setting here, not its strictness.

The check is applied as TextAttack 0.3.11's SentenceEncoder constraint applies USE
(textattack/constraints/semantics/sentence_encoders/sentence_encoder.py):
  - a candidate is compared with its reference: the text it was made from, or the original
    (compare_against_original),
  - in a window of `window` words around the word it changes, the same words of both
    (AttackedText.text_window_around_index), counted over the whole input: a pair's premise too,
    which TextAttack joins to the hypothesis with a line break; no window: all of it,
  - a text with fewer words than the window passes, with similarity 1 (skip_text_shorter_than_window),
  - similarity is the cosine, or the angular similarity 1 - arccos(cosine) / pi; it passes at >= threshold,
  - a candidate that fails is never scored by the victim and costs no query: TextAttack filters a
    transformation's texts by the constraints before its goal function sees them
    (Attack.filter_transformations).
TextFooler's recipe (textattack/attack_recipes/textfooler_jin_2019.py) and TextDefender, which
adds the constraint to each attack it builds but HotFlip (its utils/textattack_utils.py,
build_english_attacker, with args.py's sentence_similarity), both set: threshold 0.840845057,
angular, window 15, the reference the current text, texts shorter than the window skipped.
Where a greedy step fools the model with several candidates, TextAttack returns the most similar
(attacks.most_similar_success): a check that drops nothing can change which success a search
returns, never whether it succeeds.

Every search applies it (attacks.py): PWWS to the swaps that rank the words and to each greedy
step's, TextFooler and DeepWordBug to each step's, the genetic attack to each member's mutations
(its crossover's children are scored only through their mutations). The [UNK] and deletion texts
that rank words are no candidates, unchecked as in TextAttack. ASCC makes its text only at its end
and takes no check; PGD makes none. Apart from the check, each success's similarity to its
original is recorded (success_records), with or without a check.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

import attacking
import attacks
import rift
from data import Example, read_text

SENTENCE_MODEL = rift.DEFAULT_MODEL
WINDOW = 15  # words: TextFooler's and TextDefender's window_size
# TextFooler's and TextDefender's, angular: 1 - 0.5 / pi, the 0.5 radians of TextFooler's code,
# which forgot to divide the angle by pi (the recipe's comment)
TEXTFOOLER_THRESHOLD = 0.840845057
METRICS = ("cosine", "angular")
REFERENCES = ("current", "original")  # the text a candidate was made from, or the original


class SentenceEncoder:
    """A frozen copy of the pre-trained sentence model as sentence-transformers runs it: its own
    tokenizer cut at its own max_seq_length (sentence_bert_config.json), its own pooling
    (1_Pooling), eval mode, no gradients, fp32. embed(texts) gives their embeddings (N, H)."""

    def __init__(self, device: torch.device, batch_size: int):
        self.path = rift.model_path(SENTENCE_MODEL)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path, dtype=torch.float32).to(device).eval().requires_grad_(False)
        self.pooling = rift.resolve_feature("auto", self.model, self.path)
        self.max_length = json.loads(read_text(Path(self.path) / "sentence_bert_config.json"))["max_seq_length"]
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        """(N, H), the texts taken in order of length so that a batch carries little padding."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(device)
            vectors[chunk] = rift.teacher_features(self.model, batch, self.pooling).cpu().numpy()  # (B, H)
        return vectors


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of a (N, H) with the same row of b (N, H), in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.clip((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), -1.0, 1.0)


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Where TextAttack's words lie in a text, as character spans in reading order."""
    spans, position = [], 0
    for token in text.split():
        position = text.index(token, position)
        spans += [(position + start, position + end) for start, end in attacks.word_spans(token)]
        position += len(token)
    return spans


def text_window(text: str, index: int, size: int | None) -> str:
    """TextAttack's text window: `size` consecutive words (all, when there are fewer or size is
    None) centred on word `index` (with one word more before it than after it when size is even),
    moved inward where it would cross the start or the end of the text; from the first character
    of its first word to the last of its last, with whatever lies between them."""
    spans = word_offsets(text)
    size = min(size or len(spans), len(spans))
    first = min(max(index - size // 2, 0), len(spans) - size)
    return text[spans[first][0]:spans[first + size - 1][1]]


@dataclass(frozen=True)
class MeaningCheck:
    """The meaning check a search applies to its candidates (see the module's doc): the encoder
    and TextAttack's settings. keep(example) gives the example's `keep` (attacks.unchecked's contract)."""
    encoder: SentenceEncoder
    threshold: float
    metric: str = "cosine"
    window: int | None = WINDOW  # None: the whole input
    reference: str = "current"
    skip_short: bool = True

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cos = cosine(a, b)
        return cos if self.metric == "cosine" else 1 - np.arccos(cos) / np.pi

    def keep(self, example: Example):
        """A generator function: kept = yield from keep(groups), each group (the text changed, the
        slot of the word changed, the candidates) answered by (the candidates whose similarity to
        their reference reaches the threshold, those similarities). Its embeddings come from
        yielding attacking.Embed; a window embedded once is not asked for again."""
        prefix = example.context + "\n" if example.context else ""
        number = {slot: len(word_offsets(prefix)) + n for n, slot in enumerate(attacks.slots(example.words))}
        if self.window and self.skip_short and len(word_offsets(prefix + example.text)) < self.window:
            return attacks.unchecked
        embedded = {}

        def window(words: tuple[str, ...], slot: attacks.Slot) -> str:
            return text_window(prefix + " ".join(words), number[slot], self.window)

        def check(groups: list):
            pairs = [(window(example.words if self.reference == "original" else current, slot), window(text, slot))
                     for current, slot, texts in groups for text in texts]
            if not pairs:
                return [([], np.ones(0)) for _ in groups]
            new = [text for text in dict.fromkeys(text for pair in pairs for text in pair) if text not in embedded]
            if new:
                embedded.update(zip(new, (yield attacking.Embed(new))))
            similarity = self.similarity(np.stack([embedded[a] for a, _ in pairs]), np.stack([embedded[b] for _, b in pairs]))
            kept = []
            for (_, _, texts), scores in zip(groups, attacking.pieces(similarity, [len(texts) for _, _, texts in groups])):
                passed = np.flatnonzero(scores >= self.threshold)
                kept.append(([texts[j] for j in passed], scores[passed]))
            return kept
        return check


def success_records(lines: list[dict], encoder: SentenceEncoder, makes_text: list[str]) -> list[dict]:
    """adversarial.jsonl's lines, each with `similarity` and `changed_share` for a success of an
    attack in `makes_text` (None elsewhere): the cosine of MiniLM's embeddings of the whole
    perturbed text and the original (the attacked text, not a window, not a pair's premise; cosine
    whatever the check's metric) and the share of its words changed. Computed in batches once an
    evaluation has every line (each line is written without them as its example finishes)."""
    chosen = [n for n, line in enumerate(lines) if line["status"] == "successful" and line["attack"] in makes_text]
    texts = list(dict.fromkeys(text for n in chosen for text in (lines[n]["original"], lines[n]["perturbed"])))
    vectors = dict(zip(texts, encoder.embed(texts)))
    similarity = dict(zip(chosen, cosine(np.stack([vectors[lines[n]["original"]] for n in chosen]),
                                         np.stack([vectors[lines[n]["perturbed"]] for n in chosen])))) if chosen else {}
    return [line | {"similarity": float(similarity[n]) if n in similarity else None,
                    "changed_share": len(line["changed"]) / line["words"] if n in similarity else None}
            for n, line in enumerate(lines)]
