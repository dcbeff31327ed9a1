"""The paper's adversary (ASCC) and the teacher-similarity measure (linear CKA) of rift.py, against
independent references: the candidate rule by hand, the convex hull, a toy linear model whose
worst vertex is known by brute force, the loss by hand, and CKA in its Gram-matrix form."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import adversaries
import data
import rift
from data import Example

SYNONYMS = {"good": ["nice", "unbelievably", "good", "fine", "nice"], "movie": ["film"], "made": ["built"],
            "t": ["ton"], "premise": ["assumption"], "funny": ["amusing", "comic"]}


def synonyms(word):
    return tuple(SYNONYMS.get(word, ()))


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def table(tokenizer):
    return adversaries.neighbour_table(tokenizer, synonyms)


def ids(tokenizer, *words):
    return [tokenizer.convert_tokens_to_ids(w) for w in words]


def row(table, tokenizer, word):
    return [i for i in table.ids[tokenizer.convert_tokens_to_ids(word)].tolist() if i >= 0]


# ---------------------------------------------------------------------------------------------
# Candidates: which words, which neighbours


def test_table_row_is_the_word_then_its_single_token_neighbours_in_order_without_repeats(table, tokenizer):
    assert len(tokenizer.tokenize("unbelievably")) > 1  # so the rule below has something to drop
    assert row(table, tokenizer, "good") == ids(tokenizer, "good", "nice", "fine")
    assert row(table, tokenizer, "movie") == ids(tokenizer, "movie", "film")
    assert row(table, tokenizer, "the") == ids(tokenizer, "the")  # no neighbours: the word alone
    assert table.ids.shape == (tokenizer.vocab_size, 9)
    assert table.wordlike[tokenizer.convert_tokens_to_ids("good")]
    assert not table.wordlike[tokenizer.convert_tokens_to_ids(",")]
    assert not table.wordlike[tokenizer.cls_token_id]


def test_table_keeps_at_most_max_neighbours(tokenizer):
    small = adversaries.neighbour_table(tokenizer, synonyms, max_neighbours=1)
    assert small.ids.shape[1] == 2
    assert row(small, tokenizer, "good") == ids(tokenizer, "good", "nice")


def candidate_words(tokenizer, table, examples):
    """{(example, token): candidate tokens} for the positions that have neighbours."""
    batch = data.tokenize(tokenizer, examples, 32)
    candidates = adversaries.batch_candidates(table, batch)
    found = {}
    for i, encoding in enumerate(batch.encodings):
        for t, token in enumerate(encoding.tokens):
            ids = [c for c in candidates[i, t].tolist() if c >= 0]
            assert ids[0] == batch["input_ids"][i, t]  # column 0 is always the token itself
            if len(ids) > 1:
                found[(i, token)] = tokenizer.convert_ids_to_tokens(ids[1:])
    return found


def test_only_whole_single_token_words_of_the_attacked_text_get_candidates(tokenizer, table):
    text = "a good , self-made movie does n't shine ( funny ) goodness"
    found = candidate_words(tokenizer, table, [Example(tuple(text.split()), 0)])
    # "made" is part of "self-made", "t" of "n't": several sub-tokens, never attacked; "good," keeps "good".
    assert found == {(0, "good"): ["nice", "fine"], (0, "movie"): ["film"], (0, "funny"): ["amusing", "comic"]}
    found = candidate_words(tokenizer, table, [Example(("good,", "(movie)"), 0), Example(("funny",), 1)])
    assert found == {(0, "good"): ["nice", "fine"], (0, "movie"): ["film"], (1, "funny"): ["amusing", "comic"]}


def test_the_context_of_a_pair_gets_no_candidates(tokenizer, table):
    found = candidate_words(tokenizer, table, [Example(("a", "good", "movie"), 0, "the premise is good"),
                                               Example(("funny",), 1, "a movie")])
    assert found == {(0, "good"): ["nice", "fine"], (0, "movie"): ["film"], (1, "funny"): ["amusing", "comic"]}


# ---------------------------------------------------------------------------------------------
# The weights and the mixture


@pytest.fixture
def classifier(tiny_model):
    model, tokenizer = rift.load_classifier(str(tiny_model), num_labels=2)
    torch.manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)  # so that the random model's output depends on its input
    return model.eval(), tokenizer


SENTENCES = ["a good movie and a funny one", "good , good , good", "nothing at all", "funny movie"]


def batch_and_candidates(tokenizer, table):
    batch = data.tokenize(tokenizer, [Example(tuple(s.split()), i % 2) for i, s in enumerate(SENTENCES)], 32)
    return batch, adversaries.batch_candidates(table, batch)


def attack(model, batch, candidates, **kwargs):
    embeds = model.get_input_embeddings()(batch["input_ids"])
    logits, _ = rift.classify(model, embeds, batch)
    torch.manual_seed(0)
    return embeds, logits, adversaries.ascc_weights(model, batch, rift.kl_objective(logits), candidates, **kwargs)


def test_weights_are_distributions_over_the_candidates_and_zero_elsewhere(classifier, table):
    model, tokenizer = classifier
    batch, candidates = batch_and_candidates(tokenizer, table)
    _, _, w = attack(model, batch, candidates)
    assert w.shape == candidates.shape
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(w.shape[:2]))
    assert (w[candidates < 0] == 0).all()
    several = (candidates[..., 1] >= 0)
    assert several.sum() == 8 and (w[several][:, 0] < 0.999).any()  # the words with neighbours did move


def test_the_mixture_stays_in_the_convex_hull_of_the_candidates(classifier, table):
    model, tokenizer = classifier
    batch, candidates = batch_and_candidates(tokenizer, table)
    _, _, w = attack(model, batch, candidates)
    mix = adversaries.convex_mix(model, candidates, w)
    candidate_embeds = model.get_input_embeddings().weight[candidates.clamp(min=0)]  # (B, T, K, H)
    assert torch.allclose(mix, torch.einsum("btk,btkh->bth", w, candidate_embeds), atol=1e-6)
    # Inside the hull: along any direction the mixture lies between the candidates' extremes.
    directions = torch.randn(50, mix.shape[-1], generator=torch.Generator().manual_seed(0))
    valid = (candidates >= 0).unsqueeze(-1)
    along = candidate_embeds @ directions.T  # (B, T, K, 50)
    low = along.masked_fill(~valid, math.inf).min(2).values
    high = along.masked_fill(~valid, -math.inf).max(2).values
    assert ((mix @ directions.T) >= low - 1e-5).all() and ((mix @ directions.T) <= high + 1e-5).all()


def test_a_position_with_one_candidate_is_the_word_itself_exactly(classifier, table):
    model, tokenizer = classifier
    batch, candidates = batch_and_candidates(tokenizer, table)
    embeds, _, w = attack(model, batch, candidates)
    alone = candidates[..., 1] < 0
    mix = adversaries.convex_mix(model, candidates, w)
    assert torch.equal(mix[alone], embeds[alone]) and alone.sum() > 20
    only_itself = candidates.clone()
    only_itself[..., 1:] = -1
    _, logits, w = attack(model, batch, only_itself)
    adv_logits, _ = rift.classify(model, adversaries.convex_mix(model, only_itself, w), batch)
    assert torch.equal(adversaries.convex_mix(model, only_itself, w), embeds)
    assert rift.kl_divergence(logits, adv_logits).item() == pytest.approx(0.0, abs=1e-7)


def test_ascc_on_a_transformer_reaches_the_best_vertex_found_by_brute_force(classifier, table):
    model, tokenizer = classifier
    batch, candidates = batch_and_candidates(tokenizer, table)
    # Without the entropy term: on this random model the KL is ~1e-4, below the release's entropy scale.
    _, logits, w = attack(model, batch, candidates, entropy_weight=0.0)
    uniform = (candidates >= 0).float() / (candidates >= 0).sum(-1, keepdim=True)
    with torch.no_grad():
        attacked = kl_each(logits, rift.classify(model, adversaries.convex_mix(model, candidates, w), batch)[0])
        centre = kl_each(logits, rift.classify(model, adversaries.convex_mix(model, candidates, uniform), batch)[0])
        for i in range(len(SENTENCES)):
            positions = [t for t in range(candidates.shape[1]) if candidates[i, t, 1] >= 0]
            if not positions:
                assert attacked[i] == 0
                continue
            best = 0.0
            for choice in itertools.product(*[[c for c in candidates[i, t].tolist() if c >= 0] for t in positions]):
                tokens = batch["input_ids"][i:i + 1].clone()
                tokens[0, positions] = torch.tensor(choice)
                vertex = model(input_ids=tokens, attention_mask=batch["attention_mask"][i:i + 1]).logits
                best = max(best, kl_each(logits[i:i + 1], vertex).item())
            assert attacked[i] >= 0.9 * best and attacked[i] > 2 * centre[i] and best > 1e-6


def kl_each(p_logits, q_logits):
    log_p, log_q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("training", [True, False])
def test_ascc_leaves_the_mode_as_it_found_it_and_computes_no_weight_gradients(classifier, table, training):
    model, tokenizer = classifier
    batch, candidates = batch_and_candidates(tokenizer, table)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    logits, _ = rift.classify(model, embeds, batch)
    model.train(training)
    adversaries.ascc_weights(model, batch, rift.kl_objective(logits), candidates, steps=2)
    assert all(m.training == training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


class LinearBag(torch.nn.Module):
    """Logits (0, w . sum_t e_t) over an embedding table: the KL is convex in the logit shift, so
    its maximum over the hulls is at a vertex, found here by trying every one."""

    def __init__(self, vocab, dim, w):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.w = torch.nn.Parameter(w)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds, attention_mask, output_hidden_states=False, **_):
        pooled = (inputs_embeds * attention_mask.unsqueeze(-1)).sum(1)
        z = pooled @ self.w
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], -1), hidden_states=(pooled[:, None],))


def test_ascc_finds_the_worst_vertex_of_a_linear_model_found_by_brute_force():
    torch.manual_seed(0)
    model = LinearBag(40, 6, torch.randn(6))
    score = model.embed.weight.detach() @ model.w.detach()  # each token's push on the logit
    # Three attacked words with 4, 3 and 2 candidates; each word is its own least-pushing candidate,
    # so the clean text is one end of the reachable logits and the worst case the other end.
    groups = [torch.arange(0, 4), torch.arange(10, 13), torch.arange(20, 22)]
    groups = [g[score[g].argsort()] for g in groups]
    candidates = torch.full((1, 5, 4), -1)
    candidates[0, :, 0] = torch.tensor([30, 0, 0, 0, 31])  # [CLS]-like and [SEP]-like ends, never attacked
    for t, g in enumerate(groups, 1):
        candidates[0, t, :len(g)] = g
    batch = {"input_ids": candidates[..., 0], "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    clean = model(model.embed(batch["input_ids"]), batch["attention_mask"]).logits

    def kl_of(choice):  # one candidate per attacked word
        tokens = candidates[..., 0].clone()
        tokens[0, 1:4] = torch.tensor(choice)
        return rift.kl_divergence(clean, model(model.embed(tokens), batch["attention_mask"]).logits).item()

    best = max(itertools.product(*[g.tolist() for g in groups]), key=kl_of)
    weights = adversaries.ascc_weights(model, batch, rift.kl_objective(clean), candidates)
    chosen = candidates[0, 1:4].gather(1, weights[0, 1:4].argmax(-1, keepdim=True)).squeeze(1).tolist()
    assert tuple(chosen) == best == tuple(g[-1].item() for g in groups)
    mix = adversaries.convex_mix(model, candidates, weights)
    assert rift.kl_divergence(clean, model(mix, batch["attention_mask"]).logits).item() >= 0.9 * kl_of(best)
    assert (weights[0, 1:4].max(-1).values > 0.9).all()  # near the vertex: the entropy term and the KL agree


def test_the_entropy_term_pulls_the_weights_towards_a_vertex():
    model = LinearBag(10, 4, torch.zeros(4))  # constant logits: only the entropy term moves the weights
    candidates = torch.tensor([[[0, 1, 2, 3], [4, 5, 6, -1]]])
    batch = {"input_ids": candidates[..., 0], "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    clean = model(model.embed(batch["input_ids"]), batch["attention_mask"]).logits

    def entropy(weights):
        return -(weights * weights.clamp_min(1e-30).log()).sum().item()

    torch.manual_seed(0)
    start = adversaries.ascc_weights(model, batch, rift.kl_objective(clean), candidates, steps=0)
    torch.manual_seed(0)
    still = adversaries.ascc_weights(model, batch, rift.kl_objective(clean), candidates, entropy_weight=0.0)
    torch.manual_seed(0)
    sparse = adversaries.ascc_weights(model, batch, rift.kl_objective(clean), candidates, entropy_weight=1.0)
    assert torch.equal(still, start)  # no gradient, no step
    assert entropy(sparse) < 0.5 * entropy(start) and entropy(start) > 1.5


# ---------------------------------------------------------------------------------------------
# The training loss with ASCC


def test_adv_loss_with_ascc_is_ce_plus_beta_kl_to_the_soft_mixture(classifier, table):
    model, tokenizer = classifier
    batch, candidates = batch_and_candidates(tokenizer, table)
    torch.manual_seed(5)
    terms = rift.training_loss("adv", model, batch, adversaries.ASCC(table), beta=3.0)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    logits, _ = rift.classify(model, embeds, batch)
    torch.manual_seed(5)
    w = adversaries.ascc_weights(model, batch, rift.kl_objective(logits), candidates, steps=10, lr=1.0)
    mix = torch.einsum("btk,btkh->bth", w, model.get_input_embeddings().weight[candidates.clamp(min=0)])
    adv_logits, _ = rift.classify(model, mix, batch)
    ce = F.cross_entropy(logits, batch["labels"]).item()
    p, q = logits.softmax(-1), adv_logits.softmax(-1)
    kl = (p * (p / q).log()).sum(-1).mean().item()
    assert kl > 1e-5
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(ce + 3.0 * kl, rel=1e-4)


def test_rift_loss_with_ascc_sends_gradients_to_the_neighbours_embeddings(classifier, table):
    model, tokenizer = classifier
    batch, _ = batch_and_candidates(tokenizer, table)
    teacher = rift.make_teacher(model)
    critics = rift.Critics(2, model.config.hidden_size, teacher.config.hidden_size, hidden=32, out=16)
    model.train()
    terms = rift.training_loss("rift", model, batch, adversaries.ASCC(table, steps=2), teacher=teacher, critics=critics,
                               alpha=0.5, beta=2.0, feature="cls")
    terms["loss"].backward()
    grad = model.get_input_embeddings().weight.grad
    neighbours_only = ids(tokenizer, "nice", "fine", "film", "amusing", "comic")  # in no sentence
    assert (grad[neighbours_only].abs().sum(-1) > 0).all()
    assert set(terms) == {"loss", "ce", "kl", "mi_nce", "mi_bound"}


# ---------------------------------------------------------------------------------------------
# Linear CKA


def cka_by_gram_matrices(x, y):
    """The HSIC form: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)), K = x x^T, L = y y^T, H = I - 11^T/n."""
    x, y = x.double(), y.double()
    n = len(x)
    h = torch.eye(n, dtype=torch.float64) - 1 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return (torch.trace(k @ l) / torch.sqrt(torch.trace(k @ k) * torch.trace(l @ l))).item()


def test_linear_cka_by_hand_and_in_its_gram_matrix_form():
    x, y = torch.tensor([[1.0], [2.0], [3.0], [4.0]]), torch.tensor([[1.0], [3.0], [2.0], [4.0]])
    assert rift.linear_cka(x, y) == pytest.approx(0.64)  # one dimension: the squared correlation, 0.8^2
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=g), torch.randn(30, 7, generator=g)
    y = y + x @ torch.randn(5, 7, generator=g)
    assert rift.linear_cka(x, y) == pytest.approx(cka_by_gram_matrices(x, y), abs=1e-10)
    assert 0.2 < rift.linear_cka(x, y) < 1


def test_linear_cka_is_one_under_orthogonal_maps_isotropic_scaling_and_shifts_and_small_for_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert rift.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert rift.linear_cka(x, 3.5 * x @ q + 2.0) == pytest.approx(1.0, abs=1e-10)
    stretched = x * torch.linspace(0.1, 3, 16)  # an anisotropic scaling is not an invariance
    assert rift.linear_cka(x, stretched) < 0.95
    assert rift.linear_cka(x, torch.randn(200, 16, generator=g)) < 0.15


def test_teacher_similarity_is_one_before_fine_tuning_and_drops_when_the_student_moves(classifier):
    model, tokenizer = classifier
    teacher = rift.make_teacher(model)
    examples = [Example(tuple(s.split()), 0) for s in SENTENCES * 3 + ["another sentence here", "and one more"]]
    assert rift.teacher_similarity(model, teacher, tokenizer, examples, 32, "cls", batch_size=4) == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.base_model.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert rift.teacher_similarity(model, teacher, tokenizer, examples, 32, "cls", batch_size=4) < 0.99
