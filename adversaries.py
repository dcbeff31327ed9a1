"""The adversaries that make RIFT's x_adv (rift.training_loss), each also an attack on a trained model.

    PGD   this project's: every attacked word's embedding moves within a ball of radius eps
          (Madry et al. 2018)
    ASCC  the paper's (Dong et al., ICLR 2021): every attacked word's embedding becomes a convex
          combination of its counter-fitted synonyms' embeddings

and FreeLB (Zhu et al., ICLR 2020), the baseline defence: a training method of its own, whose K
ascent steps on the input's embeddings each add their gradient to the parameters'.

In training, an adversary is one value, `PGD` or `ASCC` with its own settings, built once from
train.py's flags; its .embeddings(model, embeds, batch, objective) are the adversarial word
embeddings that maximise the objective rift.py gives it. As attacks, their .attack(victim, examples,
seeds) measures a trained model against them with the word searches' contract (evaluate.py, and
train.py's robust model selection); ASCC's attack ends in a discrete text, scored as any word
attack's.
"""

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from attacks import changed_words, word_count
from data import Example, is_word, tokenize
from rift import classify, eval_mode
from attacking import AttackResult, Victim

ADVERSARIES = ("pgd", "ascc")


# ---------------------------------------------------------------------------------------------
# PGD in word-embedding space

PGD_EPS = 0.1  # the training radius per token
PGD_STEPS = 3  # ascent steps per training batch
PGD_NORM = "l2"  # the ball, per token: l2 or linf
PGD_ATTACK_STEPS = 10  # ascent steps of PGD as an attack (evaluate.py, and train.py's selection)


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The nearest point of the ball, token by token: ||delta_t||_2 <= eps, or |delta_ti| <= eps."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


def random_start(shape, eps: float, norm: str, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform in the L-inf ball; uniform direction and uniform radius in the L2 ball. Drawn from
    `generator` (a CPU one) when given, else from the device's own (training's draws)."""
    on = "cpu" if generator is not None else device
    if norm == "linf":
        return ((torch.rand(shape, generator=generator, device=on) * 2 - 1) * eps).to(device)
    direction = F.normalize(torch.randn(shape, generator=generator, device=on), dim=-1)
    return (direction * torch.rand(*shape[:-1], 1, generator=generator, device=on) * eps).to(device)


def misclassification_objective(labels: torch.Tensor):
    """The evaluation adversary's goal: cross-entropy of the true label (Madry et al. 2018). In
    training the goal is rift.kl_objective's."""
    return lambda logits: F.cross_entropy(logits.float(), labels)


def pgd_perturbation(model, embeds: torch.Tensor, batch, objective, eps: float, steps: int, norm: str,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Embedding-space PGD (Madry et al. 2018): a perturbation delta (B, T, H) of the attacked
    words' embeddings, within eps of zero for every token, that maximises objective(logits).

    Random start, then `steps` ascent steps of size 2.5 eps / steps (Madry's rule: the walk can
    cross the ball) along the sign (L-inf) or the per-token unit direction (L2) of the gradient,
    each followed by projection. The model is in eval mode while attacking, so dropout does not
    blur the gradient; its mode is restored after."""
    mask = batch["attacked_tokens"].unsqueeze(-1).to(embeds.dtype)  # (B, T, 1): words only, no [CLS]/[SEP]/pad
    embeds = embeds.detach()
    delta = random_start(embeds.shape, eps, norm, embeds.device, generator) * mask
    step_size = 2.5 * eps / max(steps, 1)
    with eval_mode(model):
        for _ in range(steps):
            delta.requires_grad_(True)
            logits, _ = classify(model, embeds + delta, batch)
            # Only delta's gradient is asked for: no weight gradients are computed here.
            grad, = torch.autograd.grad(objective(logits), delta)
            if norm == "linf":
                direction = grad.sign()
            else:
                direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = project(delta.detach() + step_size * direction, eps, norm) * mask
    return delta.detach()


@dataclass(frozen=True)
class PGD:
    """rift.training_loss's embedding-space adversary: `steps` steps of `pgd_perturbation` in the
    ball; as an attack, `attack_steps` steps aimed at a wrong label."""
    eps: float = PGD_EPS
    steps: int = PGD_STEPS
    norm: str = PGD_NORM
    attack_steps: int = PGD_ATTACK_STEPS

    def embeddings(self, model, embeds: torch.Tensor, batch, objective) -> torch.Tensor:
        """The adversarial word embeddings (B, T, H) of the clean ones (B, T, H)."""
        return embeds + pgd_perturbation(model, embeds, batch, objective, self.eps, self.steps, self.norm)

    def attack(self, victim: Victim, examples: list[Example], seeds: list, done=frozenset()) -> Iterator[tuple[int, AttackResult]]:
        """PGD as an attack (see attack_in_chunks), aimed at the true label's cross-entropy (the
        training adversary's KL goal would leave many examples standing: it is as happy to make a
        prediction more confident as to flip it). The text stays as it was: the verdict is the
        model's on the perturbed embeddings, under the victim's precision."""
        def perturb(batch, chunk, generator):
            embeds = victim.model.get_input_embeddings()(batch["input_ids"]).detach()
            delta = pgd_perturbation(victim.model, embeds, batch, misclassification_objective(batch["labels"]),
                                     self.eps, self.attack_steps, self.norm, generator)
            with torch.no_grad():
                logits, _ = classify(victim.model, embeds + delta, batch)
            return [ex.words for ex in chunk], logits.float().softmax(-1).cpu().numpy()
        return attack_in_chunks(victim, examples, seeds, done, perturb, self.attack_steps)


# ---------------------------------------------------------------------------------------------
# FreeLB (Zhu et al., ICLR 2020), the defence baseline most papers compare against
#
# Not an x_adv for rift's loss but a training method of its own: K ascent steps on one
# perturbation delta of the whole input's word embeddings, each with a full backward pass whose
# parameter gradient adds up, so one optimiser step follows (1/K) sum_k grad CE(x + delta_k, y)
# ("free" large-batch adversarial training: the K passes that find delta also train).
# Followed from the release (zhuchen03/FreeLB, huggingface-transformers/examples/run_glue_freelb.py):
# delta starts uniform in [-1, 1] on the attended tokens ([CLS] and [SEP] too), scaled by
# init_mag / sqrt(tokens x H); each ascent step adds lr * grad / ||grad|| (the norm over the whole
# example), then rescales an example whose ||delta|| exceeds max_norm back onto that sphere (0: no
# bound); there is no clean pass, the first step is already perturbed; the K steps share one
# dropout mask (the release's dp_masks), here by restarting the random state at each step.
# Defaults: the release's SST-2 line (huggingface-transformers/launch/run_glue.sh).

FREELB_STEPS = 3  # K, the ascent steps per batch
FREELB_LR = 0.1  # the ascent step size
FREELB_INIT = 1.0  # init_mag, the scale of the random start
FREELB_MAX_NORM = 0.6  # the bound on ||delta|| per example (0: none)


@dataclass(frozen=True)
class FreeLB:
    steps: int = FREELB_STEPS
    lr: float = FREELB_LR
    init_mag: float = FREELB_INIT
    max_norm: float = FREELB_MAX_NORM

    def start(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The random start (B, T, H): uniform, scaled so that ||delta|| is about init_mag / sqrt(3)."""
        mask = attention_mask.to(embeds.dtype).unsqueeze(-1)  # (B, T, 1)
        dims = mask.sum((1, 2)) * embeds.size(-1)  # (B,) attended tokens x H
        return torch.empty_like(embeds).uniform_(-1, 1) * mask * (self.init_mag / dims.sqrt()).view(-1, 1, 1)

    def ascend(self, delta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step along the example's normalised gradient, then back onto the max_norm sphere."""
        delta = delta + self.lr * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
        if self.max_norm > 0:
            norm = delta.flatten(1).float().norm(dim=1)
            delta = delta * torch.where(norm > self.max_norm, self.max_norm / norm, 1.0).view(-1, 1, 1).to(delta.dtype)
        return delta.detach()

    def backward(self, model, batch, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The K ascent steps on one batch, each backward adding scale / K of its CE's gradient to
        the parameters' .grad (train.py then takes the optimiser step). Returns, detached, the CE
        of the first step (at the random start) and `loss`, the mean CE over the K steps.

        Under DistributedDataParallel only the last step's backward synchronises: the gradients
        of the first K - 1 stay local until then, as gradient accumulation's do."""
        bare = getattr(model, "module", model)
        embed = bare.get_input_embeddings()
        delta = self.start(embed(batch["input_ids"]).detach(), batch["attention_mask"])
        device = delta.device
        cpu_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        ces = []
        for k in range(self.steps):
            torch.set_rng_state(cpu_state)  # the same dropout mask at every step
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
            last = k == self.steps - 1
            with (model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext()):
                delta.requires_grad_(True)
                logits, _ = classify(model, embed(batch["input_ids"]) + delta, batch)  # embeddings anew: the graph went
                ce = F.cross_entropy(logits.float(), batch["labels"])
                (ce * scale / self.steps).backward()
            ces.append(ce.detach())
            if not last:
                delta = self.ascend(delta.detach(), delta.grad)
        return {"loss": torch.stack(ces).mean(), "ce": ces[0]}


# ---------------------------------------------------------------------------------------------
# The paper's adversary: ASCC, convex combinations of synonyms (Dong et al., ICLR 2021)
#
# PGD moves every token anywhere within a ball. ASCC moves each word only towards its synonyms:
# the adversarial embedding of a word is a convex combination sum_k w_k e(c_k) of the embeddings
# of its candidates c_0 = the word itself, c_1..c_K its counter-fitted neighbours, so the model is
# trained against every mixture of the substitutions a word attack may make. The weights are
# w = softmax(theta), and theta takes `steps` Adam steps (lr 1) that maximise
#     KL(p(x) || p(x_adv)) - entropy_weight * sum_t H(w_t)
# (the entropy term keeps w near a vertex, i.e. near a real substitution).
#
# Followed from the authors' release (dongxinshuai/RIFT-NeurIPS2021, models/AdvPLM.py ascc_attack,
# data.py, opts.py): candidates padded to a fixed size with a mask (masked logits -> weight 0);
# a position without neighbours has one candidate, itself, so its weight is 1 and it never moves;
# theta starts at kaiming_normal_ of a (B, T, K, 1) tensor, N(0, 2 / (T K)), near the hull's centre;
# KL and entropy are summed over the batch (the entropy over positions too) and the entropy weighted
# 15 / (300 * 128); the model is in eval mode while attacking; training uses the soft mixture (not
# the argmax word), with gradients reaching every candidate's embedding.
# Not followed: the release mixes the embedding layer's output (word + position + LayerNorm), here
# the word embeddings are mixed, before position and LayerNorm (the hull of the words themselves);
# its Adam weight decay of 2e-5 on theta (negligible) is left out; its target p(x) is recomputed
# in eval mode, here it is the training pass's p(x), the very term of the loss (as for PGD).
#
# Sub-tokens. The release splits text on whitespace only and feeds each word as one token (a word
# outside BERT's vocabulary becomes [UNK], and so does a neighbour), which a stock tokenizer does
# not do. The rule here: a word is attacked only when it is a single sub-token, "word" meaning a
# whitespace-separated word without its surrounding punctuation (as attacks.py counts words:
# "brilliant," is the word "brilliant"; "n't" and "self-made" are several sub-tokens), and of its
# neighbours only those that are single sub-tokens too are candidates. A word of several sub-tokens,
# and a neighbour of another length, cannot be aligned position by position, so they are left out
# (README: how much of SST-2 this keeps).

ASCC_STEPS = 10  # Adam steps on the weights, in training and as an attack (the release's)
ASCC_LR = 1.0  # their Adam learning rate (the release's)
ASCC_ENTROPY = 15 / (300 * 128)  # the release's sparsity weight 15, over its normaliser 300 x 128


@dataclass
class Neighbours:
    """A vocabulary's ASCC candidates, built once per run by `neighbour_table`."""
    ids: torch.Tensor  # (V, K): row v = v itself, then its single-token neighbours; -1 pads
    wordlike: torch.Tensor  # (V,) bool: has a letter or digit (punctuation and special tokens do not)

    def to(self, device) -> "Neighbours":
        return Neighbours(self.ids.to(device), self.wordlike.to(device))


def neighbour_table(tokenizer, synonyms, max_neighbours: int = 8) -> Neighbours:
    """Every vocabulary token's candidates: itself, then those of synonyms(word) (a word -> words
    function, nearest first, e.g. synonyms.counterfitted_synonyms) that are one token each, at most
    max_neighbours. Neighbours are tokenized after a space, as they stand inside a sentence."""
    vocab = tokenizer.get_vocab()  # token -> id
    special = set(tokenizer.all_special_ids)
    size = max(vocab.values()) + 1
    wordlike = torch.zeros(size, dtype=torch.bool)
    found = {}
    for token, i in vocab.items():
        if i in special:
            continue
        word = tokenizer.convert_tokens_to_string([token]).strip()
        wordlike[i] = is_word(word)
        if wordlike[i] and (neighbours := synonyms(word)):
            found[i] = neighbours
    unique = sorted({n for neighbours in found.values() for n in neighbours})
    pieces = tokenizer([" " + n for n in unique], add_special_tokens=False)["input_ids"] if unique else []
    single = {n: p[0] for n, p in zip(unique, pieces) if len(p) == 1}
    ids = torch.full((size, 1 + max_neighbours), -1, dtype=torch.long)
    ids[:, 0] = torch.arange(size)
    for i, neighbours in found.items():
        kept = list(dict.fromkeys(single[n] for n in neighbours if n in single and single[n] != i))[:max_neighbours]
        ids[i, 1:1 + len(kept)] = torch.tensor(kept, dtype=torch.long)
    return Neighbours(ids, wordlike)


def batch_candidates(neighbours: Neighbours, batch) -> torch.Tensor:
    """Candidate token ids (B, T, K) of every position, -1 padded: the vocabulary table's row at the
    attacked tokens that are a whole word on their own, the token alone everywhere else.

    A whitespace word is a run of tokens each starting where the previous one ended (the fast
    tokenizer's character offsets); a token is a whole word when it is the only token with a
    letter or digit in its run ("brilliant" in "brilliant,", not "t" in "n't")."""
    ids = batch["input_ids"]  # (B, T)
    offsets = torch.tensor([encoding.offsets for encoding in batch.encodings], device=ids.device)  # (B, T, 2)
    wordlike = neighbours.wordlike[ids] & batch["attacked_tokens"]
    new_word = torch.ones_like(wordlike)
    new_word[:, 1:] = offsets[:, 1:, 0] != offsets[:, :-1, 1]
    word = new_word.long().cumsum(1)  # (B, T): which whitespace word each token belongs to
    letters = torch.zeros(ids.shape[0], ids.shape[1] + 1, dtype=torch.long, device=ids.device)
    letters.scatter_add_(1, word, wordlike.long())  # word-like tokens per whitespace word
    whole = wordlike & (letters.gather(1, word) == 1)
    candidates = neighbours.ids[ids]  # (B, T, K)
    candidates[..., 1:] = candidates[..., 1:].masked_fill(~whole.unsqueeze(-1), -1)
    return candidates


def ascc_weights(model, batch, objective, candidates: torch.Tensor, steps: int = ASCC_STEPS, lr: float = ASCC_LR,
                 entropy_weight: float = ASCC_ENTROPY, generator: torch.Generator | None = None) -> torch.Tensor:
    """ASCC's adversarial weights w (B, T, K) over the candidates (B, T, K; -1 = none): each row a
    probability vector, 0 on missing candidates, that maximises objective(logits of the mixture)
    minus entropy_weight times the summed entropy of the rows. Model in eval mode while attacking,
    its mode restored after; only theta's gradient is computed. theta's random start is drawn from
    `generator` (a CPU one) when given, so that an attack's draws depend on its own seed alone."""
    valid = candidates >= 0
    candidate_embeds = model.get_input_embeddings()(candidates.clamp(min=0)).detach()  # (B, T, K, H)
    batch_size, length, k = candidates.shape
    if generator is None:
        theta = torch.randn(batch_size, length, k, device=candidates.device)
    else:
        theta = torch.randn(batch_size, length, k, generator=generator).to(candidates.device)
    theta = theta * math.sqrt(2 / (length * k))
    theta.requires_grad_(True)
    adam = torch.optim.Adam([theta], lr=lr)
    with eval_mode(model):
        for _ in range(steps):
            log_w = theta.masked_fill(~valid, -math.inf).log_softmax(-1)  # (B, T, K)
            w = log_w.exp()
            logits, _ = classify(model, (w.unsqueeze(-1) * candidate_embeds).sum(-2), batch)
            entropy = -(w * log_w.masked_fill(~valid, 0.0)).sum()  # 0 * -inf would be NaN
            # Sums over the batch, as the release: Adam's epsilon then meets per-example gradients.
            gain = batch_size * objective(logits) - entropy_weight * entropy
            theta.grad, = torch.autograd.grad(-gain, theta)
            adam.step()
    return theta.detach().masked_fill(~valid, -math.inf).softmax(-1)


def ascc_substitution(model, batch, candidates: torch.Tensor, steps: int = ASCC_STEPS, lr: float = ASCC_LR,
                      entropy_weight: float = ASCC_ENTROPY, generator: torch.Generator | None = None) -> torch.Tensor:
    """ASCC as an attack, as the release evaluates it (utils.evaluation_by_ascc): the weights that
    maximise the cross-entropy of the true label, then each position takes its highest-weight
    candidate. Returns the substituted token ids (B, T): a discrete text, to be classified."""
    weights = ascc_weights(model, batch, misclassification_objective(batch["labels"]), candidates, steps, lr,
                           entropy_weight, generator)
    return candidates.gather(-1, weights.argmax(-1, keepdim=True)).squeeze(-1)  # weight 0 never wins: c_0 is valid


def convex_mix(model, candidates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k e(c_k): the adversarial word embeddings (B, T, H), with gradients to every
    candidate's embedding (the release's comb_w_to_logit)."""
    candidate_embeds = model.get_input_embeddings()(candidates.clamp(min=0))  # (B, T, K, H)
    return (weights.unsqueeze(-1).to(candidate_embeds.dtype) * candidate_embeds).sum(-2)


@dataclass(frozen=True)
class ASCC:
    """rift.training_loss's ASCC adversary: the candidates' mixture of `steps` Adam steps of `ascc_weights`."""
    neighbours: Neighbours
    steps: int = ASCC_STEPS
    lr: float = ASCC_LR
    entropy: float = ASCC_ENTROPY  # the weight of the weights' entropy per word

    def embeddings(self, model, embeds: torch.Tensor, batch, objective) -> torch.Tensor:
        """The adversarial word embeddings (B, T, H): the soft mixture, in place of the clean ones."""
        candidates = batch_candidates(self.neighbours, batch)
        weights = ascc_weights(model, batch, objective, candidates, self.steps, self.lr, self.entropy)
        return convex_mix(model, candidates, weights)

    def attack(self, victim: Victim, examples: list[Example], seeds: list, done=frozenset()) -> Iterator[tuple[int, AttackResult]]:
        """ASCC, the paper's third attack (see attack_in_chunks): ascc_substitution, then the discrete
        text written back as words and scored in fp32 as any word attack's: the verdict is the
        text's, not the mixture's."""
        def perturb(batch, chunk, generator):
            ids = ascc_substitution(victim.model, batch, batch_candidates(self.neighbours, batch), self.steps, self.lr,
                                    self.entropy, generator)
            texts = [substituted_words(victim.tokenizer, ex, batch, row, ids[row]) for row, ex in enumerate(chunk)]
            return texts, victim.score(chunk, texts, False, victim.batch_size)
        return attack_in_chunks(victim, examples, seeds, done, perturb, self.steps)


# ---------------------------------------------------------------------------------------------
# The adversaries as attacks

def attack_in_chunks(victim: Victim, examples: list[Example], seeds: list, done, perturb,
                     steps: int) -> Iterator[tuple[int, AttackResult]]:
    """An adversary as an attack, with the word searches' contract (attacking.WordAttack.attack): an
    AttackResult for each example whose position is not in `done`, with its position. Examples go
    in fixed chunks of victim.batch_size; perturb(batch, chunk, generator) returns each example's
    words after the attack and the model's probabilities (B, C) on them. A chunk's random start is
    drawn from the seed of its first example, so a chunk gives the same result however many chunks
    ran before; chunks whose positions are all done are skipped (a resumed evaluation's, or another
    process's). The clean verdict is fp32's. queries: the model's passes for the example (the clean
    one, the attack's steps, the final one), each a model call too."""
    device = victim.model.device
    for start in range(0, len(examples), victim.batch_size):
        positions = range(start, min(start + victim.batch_size, len(examples)))
        if all(n in done for n in positions):
            continue
        began = time.perf_counter()
        chunk = [examples[n] for n in positions]
        batch = tokenize(victim.tokenizer, chunk, victim.max_length).to(device)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(seeds[start]).generate_state(1)[0]))
        with eval_mode(victim.model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=victim.amp):
            texts, after = perturb(batch, chunk, generator)
        before = victim.score(chunk, [ex.words for ex in chunk], False, victim.batch_size)
        seconds = (time.perf_counter() - began) / len(chunk)
        for n, ex, text, p, q in zip(positions, chunk, texts, before, after):
            if n in done:
                continue
            right = int(p.argmax()) == ex.label
            status = "skipped" if not right else "failed" if int(q.argmax()) == ex.label else "successful"
            perturbed = text if right else ex.words
            yield n, AttackResult(status, ex.label, ex.words, perturbed, changed_words(ex.words, perturbed),
                                  word_count(ex.words), p.tolist(), (q if right else p).tolist(),
                                  2 + steps if right else 1, 2 + steps if right else 1, seconds, ex.context)


def substituted_words(tokenizer, example: Example, batch, row: int, ids: torch.Tensor) -> tuple[str, ...]:
    """The example's words with each token that ASCC changed replaced, in the text, by its
    substitute (a whole word: ASCC changes only single-token words into single-token neighbours),
    found through the fast tokenizer's character offsets; the punctuation around it stays."""
    text = " ".join(example.words)
    changed = (ids != batch["input_ids"][row]).nonzero().flatten().tolist()
    offsets = batch.encodings[row].offsets
    for t in sorted(changed, key=lambda t: -offsets[t][0]):  # right to left: earlier offsets stay valid
        start, end = offsets[t]
        text = text[:start] + tokenizer.convert_ids_to_tokens(int(ids[t])) + text[end:]
    return tuple(text.split(" "))
