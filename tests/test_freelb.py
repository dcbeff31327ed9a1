"""FreeLB (adversaries.FreeLB) against a hand-written reference of its K steps: the parameters'
gradient is the mean of the steps' gradients, the perturbation starts, climbs and stays bounded
as the FreeLB release's does, and the steps share one dropout mask."""

import json

import pytest
import torch
import torch.nn.functional as F

import adversaries
from conftest import run_cli
from test_rift_math import classifier, sentence_batch  # noqa: F401 (a fixture)


def reference_gradients(model, batch, steps, lr, init_mag, max_norm) -> list[torch.Tensor]:
    """FreeLB written out step by step with autograd.grad: the random start, then at each step the
    CE's gradients with respect to the parameters and to delta, the normalised ascent step and the
    rescaling onto the max_norm sphere; the parameters' gradient is the mean over the steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    embeds = model.get_input_embeddings()(batch["input_ids"])  # (B, T, H)
    mask = batch["attention_mask"].float()[:, :, None]  # (B, T, 1)
    tokens = batch["attention_mask"].sum(1).float()  # (B,)
    delta = torch.empty_like(embeds).uniform_(-1, 1) * mask
    delta = (delta * (init_mag / torch.sqrt(tokens * embeds.shape[-1]))[:, None, None]).detach()
    total = [torch.zeros_like(p) for p in params]
    for k in range(steps):
        delta.requires_grad_(True)
        inputs = {key: batch[key] for key in ("attention_mask", "token_type_ids")}
        logits = model(inputs_embeds=model.get_input_embeddings()(batch["input_ids"]) + delta, **inputs).logits
        ce = F.cross_entropy(logits, batch["labels"])
        *grads, delta_grad = torch.autograd.grad(ce, params + [delta])
        total = [t + g / steps for t, g in zip(total, grads)]
        if k < steps - 1:
            per_example = torch.sqrt((delta_grad ** 2).sum((1, 2)))[:, None, None]
            delta = delta.detach() + lr * delta_grad / per_example
            if max_norm > 0:
                norms = torch.sqrt((delta ** 2).sum((1, 2)))
                delta = torch.stack([d * max_norm / n if n > max_norm else d for d, n in zip(delta, norms)])
            delta = delta.detach()
    return total


@pytest.mark.parametrize("steps,max_norm", [(2, 0.0), (2, 0.05), (3, 0.2)])
def test_freelb_accumulates_the_mean_of_its_steps_gradients_as_the_reference(classifier, steps, max_norm):
    model, tokenizer = classifier
    model.eval()  # no dropout: the reference draws nothing but the start
    batch = sentence_batch(tokenizer)
    freelb = adversaries.FreeLB(steps=steps, lr=0.1, init_mag=1.0, max_norm=max_norm)
    torch.manual_seed(7)
    terms = freelb.backward(model, batch)
    got = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    torch.manual_seed(7)
    expected = reference_gradients(model, batch, steps, 0.1, 1.0, max_norm)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
    assert terms["loss"].shape == () and terms["ce"].shape == () and not terms["loss"].requires_grad


def test_freelb_scales_its_gradients_for_accumulation(classifier):
    model, tokenizer = classifier
    model.eval()
    batch = sentence_batch(tokenizer)
    grads = []
    for scale in (1.0, 0.25):
        model.zero_grad()
        torch.manual_seed(1)
        adversaries.FreeLB(steps=2).backward(model, batch, scale=scale)
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for whole, quarter in zip(*grads):
        torch.testing.assert_close(quarter, whole / 4)


def test_freelb_start_covers_the_attended_tokens_at_the_release_scale():
    torch.manual_seed(0)
    embeds = torch.zeros(200, 10, 16)  # (B, T, H)
    mask = torch.ones(200, 10, dtype=torch.long)
    mask[:, 6:] = 0  # six tokens attended
    delta = adversaries.FreeLB(init_mag=1.0).start(embeds, mask)
    assert delta[:, 6:].abs().max() == 0 and delta[:, :6].abs().min() > 0
    assert delta.abs().max() <= 1.0 / (6 * 16) ** 0.5
    # uniform(-1, 1) has variance 1/3: the norm over tokens x H coordinates is about init_mag / sqrt(3)
    assert delta.flatten(1).norm(dim=1).mean() == pytest.approx(3 ** -0.5, rel=0.02)


def test_freelb_ascent_moves_by_lr_and_stays_within_max_norm():
    torch.manual_seed(0)
    delta, grad = torch.zeros(3, 4, 5), torch.randn(3, 4, 5)
    moved = adversaries.FreeLB(lr=0.1, max_norm=0.0).ascend(delta, grad)
    torch.testing.assert_close(moved.flatten(1).norm(dim=1), torch.full((3,), 0.1))
    big = torch.randn(3, 4, 5)
    bounded = adversaries.FreeLB(lr=0.1, max_norm=0.5).ascend(big, grad)
    assert (bounded.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()
    small = 1e-3 * big  # well inside the sphere: the step alone, no rescaling
    torch.testing.assert_close(adversaries.FreeLB(lr=0.1, max_norm=0.5).ascend(small, grad),
                               adversaries.FreeLB(lr=0.1, max_norm=0.0).ascend(small, grad))


def test_freelb_steps_share_one_dropout_mask(classifier):
    """With no perturbation at all (no start, no step) every step sees the same input; in train
    mode only a shared dropout mask makes their CEs equal, as two plain passes are not."""
    model, tokenizer = classifier
    model.config.hidden_dropout_prob = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    model.train()
    batch = sentence_batch(tokenizer)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        assert not torch.equal(model(**inputs).logits, model(**inputs).logits)  # dropout is on
    terms = adversaries.FreeLB(steps=3, lr=0.0, init_mag=0.0).backward(model, batch)
    assert terms["loss"].item() == pytest.approx(terms["ce"].item(), abs=1e-6)


@pytest.mark.slow
def test_freelb_trains_on_two_processes_with_accumulation_and_ends_with_the_replicas_in_sync(
        tiny_model, shared_data, torchrun, tmp_path):
    """Its first K - 1 backward passes stay local (no_sync), the last synchronises."""
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "freelb",
                     "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4, "--max-length", 32,
                     "--grad-accum", 2, "--log-every", 2, "--seed", 3, "--out", tmp_path / "run",
                     launcher=torchrun, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "freelb" and summary["world_size"] == 2 and summary["replicas_in_sync"]
    assert summary["select_on"] == "clean" and summary["adversary"] is None


@pytest.mark.slow
def test_freelb_refuses_log_pulls_in_one_line(tiny_model, shared_data, tmp_path):
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "freelb",
                     "--log-pulls", "--out", tmp_path / "run")
    assert result.returncode == 2 and "drop --log-pulls" in result.stderr and not (tmp_path / "run").exists()
