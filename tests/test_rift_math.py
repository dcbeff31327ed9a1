"""The mathematics of rift.py against independent references: InfoNCE on Gaussians of known mutual
information, the class-conditional bound, KL, the projections, PGD, and the three training losses."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import adversaries
import data
import rift
from data import Example

# ---------------------------------------------------------------------------------------------
# InfoNCE


def gaussian_bound(rho: float, d: int = 4, batch: int = 256, batches: int = 16, seed: int = 0) -> float:
    """log B - InfoNCE, averaged over batches, for y = rho x + sqrt(1 - rho^2) noise in d dimensions,
    scored with the optimal critic f(x_i, y_j) = log p(y_j | x_i) (terms in y_j alone cancel in the
    softmax over i)."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(batches):
        x = torch.randn(batch, d, generator=g, dtype=torch.float64)
        y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(batch, d, generator=g, dtype=torch.float64)
        scores = -((y[None, :, :] - rho * x[:, None, :]) ** 2).sum(-1) / (2 * (1 - rho ** 2))  # [i, j]
        values.append(math.log(batch) - rift.info_nce(scores).item())
    return sum(values) / len(values)


def gaussian_mi(rho: float, d: int = 4) -> float:
    return -d / 2 * math.log(1 - rho ** 2)


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.8, 0.95])
def test_info_nce_bound_stays_below_true_gaussian_mi(rho):
    assert gaussian_bound(rho) <= gaussian_mi(rho) + 0.05


def test_info_nce_bound_increases_with_correlation():
    bounds = [gaussian_bound(rho) for rho in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99)]
    assert bounds == sorted(bounds) and bounds[0] < bounds[-1] - 3


def test_info_nce_bound_is_tight_when_mi_is_much_smaller_than_log_batch():
    assert gaussian_bound(0.3) == pytest.approx(gaussian_mi(0.3), abs=0.05)  # MI 0.19 << log 256 = 5.5


def test_info_nce_bound_saturates_at_log_batch_for_identical_features():
    assert gaussian_bound(0.99999) == pytest.approx(math.log(256), abs=0.01)
    x = torch.randn(64, 8, dtype=torch.float64)
    sharp = -torch.cdist(x, x) ** 2 / 1e-3  # y = x, critic -|x_i - y_j|^2 / sigma^2 with sigma -> 0
    assert math.log(64) - rift.info_nce(sharp).item() == pytest.approx(math.log(64), abs=1e-6)


def test_info_nce_matches_hand_written_loop_with_softmax_over_rows():
    scores = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    by_hand = -sum(torch.log_softmax(scores[:, j], dim=0)[j] for j in range(5)) / 5
    by_rows = -sum(torch.log_softmax(scores[i, :], dim=0)[i] for i in range(5)) / 5
    assert rift.info_nce(scores).item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert abs(by_hand - by_rows) > 1e-3  # the matrix is asymmetric enough to tell the orientations apart


# ---------------------------------------------------------------------------------------------
# Class-conditional InfoNCE


def hand_conditional_info_nce(critics, s, t, labels, tau):
    losses, bounds = [], []
    for y in sorted(set(labels.tolist())):
        rows = [i for i, label in enumerate(labels.tolist()) if label == y]
        if len(rows) < 2:
            continue
        u = critics.student[y](s[rows])
        v = critics.teacher[y](t[rows])
        u, v = u / u.norm(dim=-1, keepdim=True), v / v.norm(dim=-1, keepdim=True)
        scores = (u @ v.T) / tau
        loss = -sum(torch.log_softmax(scores[:, j], dim=0)[j] for j in range(len(rows))) / len(rows)
        losses.append(loss.item())
        bounds.append(math.log(len(rows)) - loss.item())
    return sum(losses) / len(losses), sum(bounds) / len(bounds)


def test_conditional_info_nce_is_mean_of_per_class_info_nce_with_that_class_heads():
    torch.manual_seed(0)
    critics = rift.Critics(3, student_dim=6, teacher_dim=5, hidden=16, out=8)
    s, t = torch.randn(10, 6), torch.randn(10, 5)
    labels = torch.tensor([0, 2, 1, 0, 2, 2, 1, 0, 1, 0])
    loss, bound = rift.conditional_info_nce(critics, s, t, labels, tau=0.2)
    want_loss, want_bound = hand_conditional_info_nce(critics, s, t, labels, 0.2)
    assert loss.item() == pytest.approx(want_loss, abs=1e-5)
    assert bound.item() == pytest.approx(want_bound, abs=1e-5)


def test_conditional_info_nce_uses_each_class_own_critic():
    torch.manual_seed(0)
    critics = rift.Critics(2, 4, 4, hidden=8, out=8)
    s, t, labels = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 1])
    before, _ = rift.conditional_info_nce(critics, s, t, labels, tau=0.2)
    with torch.no_grad():
        critics.student[1][0].weight.mul_(-3)
    after, _ = rift.conditional_info_nce(critics, s, t, labels, tau=0.2)
    assert before.item() != pytest.approx(after.item(), abs=1e-4)


def test_conditional_info_nce_leaves_out_a_class_with_one_example():
    torch.manual_seed(0)
    critics = rift.Critics(3, 4, 4, hidden=8, out=8)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    with_single = rift.conditional_info_nce(critics, s, t, torch.tensor([0, 0, 1, 1, 2]), tau=0.2)
    without = rift.conditional_info_nce(critics, s[:4], t[:4], torch.tensor([0, 0, 1, 1]), tau=0.2)
    assert with_single[0].item() == pytest.approx(without[0].item(), abs=1e-6)
    assert with_single[1].item() == pytest.approx(without[1].item(), abs=1e-6)


def test_conditional_info_nce_raises_when_no_class_has_two_examples():
    critics = rift.Critics(3, 4, 4, hidden=8, out=8)
    with pytest.raises(ValueError):
        rift.conditional_info_nce(critics, torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2]), 0.2)


# ---------------------------------------------------------------------------------------------
# KL divergence


def test_kl_divergence_matches_hand_computed_sum():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    q = torch.tensor([[0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    by_hand = sum(sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr)) for pr, qr in zip(p.tolist(), q.tolist())) / 2
    # logits are log-probabilities plus any per-row constant
    got = rift.kl_divergence(p.log() + 1.7, q.log() - 0.3)
    assert got.item() == pytest.approx(by_hand, abs=1e-6)


def test_kl_divergence_is_zero_for_identical_logits():
    logits = torch.randn(4, 3)
    assert rift.kl_divergence(logits, logits).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_divergence_matches_torch_kl_div_batchmean():
    p_logits, q_logits = torch.randn(6, 4), torch.randn(6, 4)
    want = F.kl_div(F.log_softmax(q_logits, -1), F.log_softmax(p_logits, -1), reduction="batchmean", log_target=True)
    assert rift.kl_divergence(p_logits, q_logits).item() == pytest.approx(want.item(), abs=1e-6)
    assert rift.kl_divergence(q_logits, p_logits).item() != pytest.approx(want.item(), abs=1e-4)  # not symmetric


# ---------------------------------------------------------------------------------------------
# Projection and random start


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_project_puts_every_token_inside_the_ball_and_is_idempotent(norm):
    delta = torch.randn(3, 7, 16) * 2
    projected = adversaries.project(delta, 0.5, norm)
    if norm == "l2":
        assert (projected.norm(dim=-1) <= 0.5 + 1e-6).all()
    else:
        assert projected.abs().max() <= 0.5
    assert torch.allclose(adversaries.project(projected, 0.5, norm), projected, atol=1e-7)


def test_project_l2_leaves_points_inside_unchanged_and_scales_the_others_to_the_sphere():
    inside, outside = torch.tensor([0.3, 0.0, 0.4]), torch.tensor([3.0, 0.0, 4.0])  # norms 0.5 and 5
    projected = adversaries.project(torch.stack([inside, outside]), 1.0, "l2")
    assert torch.equal(projected[0], inside)
    assert torch.allclose(projected[1], outside / 5)


def test_project_linf_clamps_each_entry():
    delta = torch.tensor([[0.2, -0.9, 1.5, -0.1]])
    assert torch.equal(adversaries.project(delta, 0.5, "linf"), torch.tensor([[0.2, -0.5, 0.5, -0.1]]))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_start_lies_in_the_ball_and_is_not_degenerate(norm):
    torch.manual_seed(0)
    start = adversaries.random_start((4, 9, 16), 0.3, norm, "cpu")
    assert start.shape == (4, 9, 16)
    if norm == "l2":
        radii = start.norm(dim=-1)
        assert (radii <= 0.3 + 1e-6).all() and radii.min() < 0.1 and radii.max() > 0.2
    else:
        assert start.abs().max() <= 0.3 and start.abs().max() > 0.25
    assert torch.equal(adversaries.project(start, 0.3, norm), start)


# ---------------------------------------------------------------------------------------------
# PGD on the tiny model

SENTENCES = ["a fine and moving film", "dull , flat and far too long", "it works", "nothing here at all really"]


@pytest.fixture
def classifier(tiny_model):
    """The tiny encoder with a new 2-class head. The head's weights are scaled up so that the random
    model's outputs depend visibly on its input (at the usual 0.02 init all logits are ~equal)."""
    model, tokenizer = rift.load_classifier(str(tiny_model), num_labels=2)
    torch.manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)
    return model, tokenizer


def sentence_batch(tokenizer, contexts=None):
    examples = [Example(tuple(s.split()), i % 2, contexts[i] if contexts else None) for i, s in enumerate(SENTENCES)]
    return data.tokenize(tokenizer, examples, 32)


def clean_pass(model, batch):
    embeds = model.get_input_embeddings()(batch["input_ids"])
    logits, _ = rift.classify(model, embeds, batch)
    return embeds, logits


@pytest.mark.parametrize("norm,eps", [("l2", 0.1), ("linf", 0.02)])
def test_pgd_perturbation_stays_in_the_ball_for_every_token(classifier, norm, eps):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    embeds, logits = clean_pass(model.eval(), batch)
    delta = adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), eps, steps=4, norm=norm)
    assert delta.shape == embeds.shape
    if norm == "l2":
        assert (delta.norm(dim=-1) <= eps * (1 + 1e-5)).all()
    else:
        assert delta.abs().max() <= eps * (1 + 1e-6)
    assert delta.abs().sum() > 0


def test_pgd_perturbation_is_zero_outside_the_attacked_tokens(classifier):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    embeds, logits = clean_pass(model.eval(), batch)
    delta = adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), 0.1, steps=3, norm="l2")
    moved = delta.norm(dim=-1) > 0
    assert torch.equal(moved, batch["attacked_tokens"])
    assert not moved[:, 0].any()  # [CLS]
    assert not moved[batch["attention_mask"] == 0].any()  # padding (the short sentences have some)
    assert (batch["attention_mask"] == 0).any()


def test_pgd_perturbation_never_touches_the_context_of_a_pair(classifier):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer, contexts=["the premise is here", "a man sleeps", "two dogs", "it rains"])
    embeds, logits = clean_pass(model.eval(), batch)
    delta = adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), 0.1, steps=3, norm="l2")
    moved = delta.norm(dim=-1) > 0
    hypothesis = torch.tensor([[s == 1 for s in batch.sequence_ids(i)] for i in range(len(SENTENCES))])
    context = torch.tensor([[s == 0 for s in batch.sequence_ids(i)] for i in range(len(SENTENCES))])
    assert torch.equal(moved, hypothesis)
    assert not moved[context].any() and context.any()


@pytest.mark.parametrize("norm,eps", [("l2", 0.1), ("linf", 0.02)])
def test_pgd_raises_kl_well_above_a_random_start_of_the_same_radius(classifier, norm, eps):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    embeds, logits = clean_pass(model.eval(), batch)
    mask = batch["attacked_tokens"].unsqueeze(-1)
    pgd_kl, random_kl = 0.0, 0.0
    for seed in range(3):
        torch.manual_seed(seed)
        delta = adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), eps, steps=5, norm=norm)
        pgd_kl += rift.kl_divergence(logits, rift.classify(model, embeds + delta, batch)[0]).item()
        noise = adversaries.random_start(embeds.shape, eps, norm, "cpu") * mask
        random_kl += rift.kl_divergence(logits, rift.classify(model, embeds + noise, batch)[0]).item()
    assert pgd_kl > 10 * max(random_kl, 0.0) and pgd_kl > 1e-4


@pytest.mark.parametrize("norm,eps", [("l2", 0.1), ("linf", 0.02)])
def test_misclassification_pgd_raises_the_true_label_loss_above_a_random_start(classifier, norm, eps):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    embeds, _ = clean_pass(model.eval(), batch)
    mask = batch["attacked_tokens"].unsqueeze(-1)
    objective = adversaries.misclassification_objective(batch["labels"])
    torch.manual_seed(0)
    delta = adversaries.pgd_perturbation(model, embeds, batch, objective, eps, steps=5, norm=norm)
    noise = adversaries.random_start(embeds.shape, eps, norm, "cpu") * mask
    with torch.no_grad():
        attacked = objective(rift.classify(model, embeds + delta, batch)[0]).item()
        random = objective(rift.classify(model, embeds + noise, batch)[0]).item()
        clean = objective(rift.classify(model, embeds, batch)[0]).item()
    label_zero = adversaries.misclassification_objective(torch.tensor([0]))
    assert label_zero(torch.tensor([[2.0, 0.0]])).item() == pytest.approx(math.log(1 + math.exp(-2.0)))
    assert attacked > random + 1e-4 and attacked > clean + 1e-4


class LinearBag(torch.nn.Module):
    """A model whose worst case is known: logits (0, w . sum_t e_t). The KL is convex in the logit
    shift, so PGD must push every attacked token's delta to the edge of its ball along +-w."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, inputs_embeds, attention_mask, output_hidden_states=False, **_):
        pooled = (inputs_embeds * attention_mask.unsqueeze(-1)).sum(1)
        z = pooled @ self.w
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], -1), hidden_states=(pooled[:, None],))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_reaches_the_known_worst_case_of_a_linear_model(norm):
    torch.manual_seed(0)
    w = torch.randn(8)
    embeds = torch.randn(3, 6, 8)
    attacked = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    batch = {"attention_mask": torch.ones(3, 6, dtype=torch.long), "attacked_tokens": attacked}
    model = LinearBag(w)
    clean = model(embeds, batch["attention_mask"]).logits
    eps = 0.05
    delta = adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(clean), eps, steps=10, norm=norm)
    shift = (delta.sum(1) @ w).abs()  # how far the logit moved
    per_token = eps * (w.norm() if norm == "l2" else w.abs().sum())
    assert torch.all(shift >= 0.95 * attacked.sum(1) * per_token), (shift, attacked.sum(1) * per_token)


@pytest.mark.parametrize("training", [True, False])
def test_pgd_perturbation_leaves_the_model_mode_as_it_found_it(classifier, training):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    embeds, logits = clean_pass(model.eval(), batch)
    model.train(training)
    adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), 0.1, steps=2, norm="l2")
    assert all(m.training == training for m in model.modules())


def test_pgd_perturbation_computes_no_weight_gradients(classifier):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    embeds, logits = clean_pass(model.eval(), batch)
    adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), 0.1, steps=2, norm="l2")
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# The training losses, by hand


def plain_logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"]).logits


def test_standard_loss_is_cross_entropy_of_the_model_logits(classifier):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    model.eval()
    terms = rift.training_loss("standard", model, batch)
    ce = F.cross_entropy(plain_logits(model, batch), batch["labels"])
    assert terms["loss"].item() == pytest.approx(ce.item(), abs=1e-5)
    assert set(terms) == {"loss", "ce"}


def adversarial_logits_by_hand(model, batch, seed, eps, steps, norm):
    embeds = model.get_input_embeddings()(batch["input_ids"])
    logits = plain_logits(model, batch)
    torch.manual_seed(seed)
    delta = adversaries.pgd_perturbation(model, embeds, batch, rift.kl_objective(logits), eps, steps, norm)
    out = model(inputs_embeds=embeds + delta, attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"], output_hidden_states=True)
    return logits, out.logits, out.hidden_states[-1][:, 0]


def hand_kl(p_logits, q_logits):
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    return (p * (p / q).log()).sum(-1).mean()


def test_adv_loss_is_ce_plus_beta_kl_to_the_pgd_adversary(classifier):
    model, tokenizer = classifier
    batch = sentence_batch(tokenizer)
    model.eval()  # no dropout: the hand computation sees the same network
    torch.manual_seed(7)
    terms = rift.training_loss("adv", model, batch, adversaries.PGD(eps=0.1, steps=3, norm="l2"), beta=4.0)
    logits, adv_logits, _ = adversarial_logits_by_hand(model, batch, 7, 0.1, 3, "l2")
    ce, kl = F.cross_entropy(logits, batch["labels"]), hand_kl(logits, adv_logits)
    assert kl.item() > 1e-4  # the KL term is not negligible, so the check below has teeth
    assert terms["ce"].item() == pytest.approx(ce.item(), abs=1e-5)
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-3, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(ce.item() + 4.0 * kl.item(), rel=1e-4)
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + 4.0 * terms["kl"].item(), rel=1e-5)


@pytest.fixture
def rift_parts(classifier):
    model, tokenizer = classifier
    teacher = rift.make_teacher(model)
    torch.manual_seed(1)
    with torch.no_grad():  # as after some fine-tuning: the student is no longer the teacher
        for p in model.base_model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    critics = rift.Critics(2, model.config.hidden_size, teacher.config.hidden_size, hidden=32, out=16)
    return model, tokenizer, teacher, critics


def test_rift_loss_adds_alpha_times_conditional_info_nce_of_adversarial_student_and_clean_teacher(rift_parts):
    model, tokenizer, teacher, critics = rift_parts
    batch = sentence_batch(tokenizer)
    model.eval()
    torch.manual_seed(3)
    terms = rift.training_loss("rift", model, batch, adversaries.PGD(eps=0.1, steps=3, norm="l2"), teacher=teacher,
                               critics=critics, alpha=0.5, beta=2.0, tau=0.2, feature="cls")
    logits, adv_logits, adv_features = adversarial_logits_by_hand(model, batch, 3, 0.1, 3, "l2")
    clean_teacher = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch["token_type_ids"]).last_hidden_state[:, 0]
    mi_nce, mi_bound = hand_conditional_info_nce(critics, adv_features, clean_teacher, batch["labels"], 0.2)
    ce, kl = F.cross_entropy(logits, batch["labels"]).item(), hand_kl(logits, adv_logits).item()
    assert terms["mi_nce"].item() == pytest.approx(mi_nce, abs=1e-4)
    assert terms["mi_bound"].item() == pytest.approx(mi_bound, abs=1e-4)
    assert terms["loss"].item() == pytest.approx(ce + 2.0 * kl + 0.5 * mi_nce, rel=1e-4)
    assert terms["loss"].item() == pytest.approx(
        terms["ce"].item() + 2.0 * terms["kl"].item() + 0.5 * terms["mi_nce"].item(), rel=1e-5)


def test_rift_loss_gradients_reach_student_and_critics_but_not_the_teacher(rift_parts):
    model, tokenizer, teacher, critics = rift_parts
    batch = sentence_batch(tokenizer)
    model.train()
    terms = rift.training_loss("rift", model, batch, adversaries.PGD(eps=0.1, steps=2, norm="l2"), teacher=teacher,
                               critics=critics, alpha=0.5, beta=2.0, feature="cls")
    terms["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for head in list(critics.student) + list(critics.teacher):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in terms.items() if k != "loss")  # logged terms are detached


def test_teacher_is_a_frozen_eval_mode_copy_independent_of_the_student(rift_parts):
    model, tokenizer, teacher, _ = rift_parts
    assert not teacher.training
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


# ---------------------------------------------------------------------------------------------
# Each term's pull on the encoder (train.py --log-pulls)


def encoder_params(model) -> list[torch.Tensor]:
    return [p for p in model.base_model.parameters() if p.requires_grad]


def seeded_terms(method, model, tokenizer, teacher, critics, seed=5):
    """loss_terms in train mode (dropout) with the adversary's random start: the same seed, the same draws."""
    torch.manual_seed(seed)
    return rift.loss_terms(method, model, sentence_batch(tokenizer), adversaries.PGD(eps=0.1, steps=2, norm="l2"),
                           teacher=teacher, critics=critics, alpha=0.5, beta=2.0, feature="mean")


@pytest.mark.parametrize("method", ["adv", "rift"])
def test_each_terms_pull_is_the_norm_of_its_own_backward_pass_and_the_cosines_between_them(rift_parts, method):
    """Against independent references: each weighted term alone, from a fresh forward pass with the same
    random draws, backpropagated with .backward() into the encoder's .grad."""
    model, tokenizer, teacher, critics = rift_parts
    model.train()
    weighted, _ = seeded_terms(method, model, tokenizer, teacher, critics)
    pulls = rift.term_pulls(weighted, encoder_params(model))
    names = ["ce", "kl", "mi"][:len(weighted)]
    assert list(weighted) == names
    assert all(p.grad is None for p in model.parameters())  # the pulls touch no .grad
    grads = {}
    for name in names:
        model.zero_grad(set_to_none=True)
        seeded_terms(method, model, tokenizer, teacher, critics)[0][name].backward()
        grads[name] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                                 for p in encoder_params(model)])
    expected = {f"pull_{name}": grads[name].norm().item() for name in names}
    expected |= {f"cos_{a}_{b}": F.cosine_similarity(grads[a], grads[b], dim=0).item()
                 for i, a in enumerate(names) for b in names[i + 1:]}
    assert pulls.keys() == expected.keys()
    assert {"rift": {"pull_mi", "cos_ce_kl", "cos_ce_mi", "cos_kl_mi"}, "adv": {"cos_ce_kl"}}[method] <= pulls.keys()
    for key, value in expected.items():
        assert pulls[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert all(value > 1e-4 for key, value in expected.items() if key.startswith("pull_"))  # every term pulls
    assert all(abs(value) < 0.999 for key, value in expected.items() if key.startswith("cos_"))  # in its own direction


def test_the_pulls_leave_the_losss_own_gradients_bit_for_bit_as_they_were(rift_parts):
    model, tokenizer, teacher, critics = rift_parts
    model.train()
    grads = []
    for log_pulls in (False, True):
        model.zero_grad(set_to_none=True), critics.zero_grad(set_to_none=True)
        weighted, _ = seeded_terms("rift", model, tokenizer, teacher, critics)
        if log_pulls:
            rift.term_pulls(weighted, encoder_params(model))
        sum(weighted.values()).backward()
        grads.append([p.grad.clone() for p in [*model.parameters(), *critics.parameters()] if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) and all(torch.equal(a, b) for a, b in zip(*grads))


def test_standard_has_one_pull_and_no_cosine(classifier):
    model, tokenizer = classifier
    weighted, logged = rift.loss_terms("standard", model, sentence_batch(tokenizer))
    assert set(rift.term_pulls(weighted, encoder_params(model))) == {"pull_ce"}
    assert rift.training_loss("standard", model, sentence_batch(tokenizer))["loss"].item() == pytest.approx(
        logged["ce"].item(), abs=1e-6)
