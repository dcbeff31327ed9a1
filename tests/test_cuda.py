"""The CUDA paths against the CPU: from the same weights and inputs, the same loss terms, the same
ASCC weights and the same attack outcomes; and bf16 autocast close to fp32. Skipped, with the
reason shown, where there is no GPU: `python experiments/gpu.py run check` runs them on one."""

import pytest
import torch
import transformers

import attacking
from adversaries import ascc_weights, batch_candidates, neighbour_table
from data import Example, tokenize
from rift import Critics, kl_objective, make_teacher, training_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: these run on a GPU (python experiments/gpu.py run check runs them)")
CUDA = torch.device("cuda")
WORDS = ["the", "film", "movie", "is", "was", "good", "great", "fine", "bad", "awful", "poor", "a", "story", "plot",
         "dull", "it", "and", "."]
TABLE = {"film": ["movie"], "movie": ["film"], "good": ["great", "fine"], "great": ["good", "fine"],
         "bad": ["awful", "poor"], "awful": ["bad", "poor"], "dull": ["poor"], "story": ["plot"], "plot": ["story"]}
SENTENCES = [("the film is good .", 1), ("a great story and a fine plot", 1), ("the movie was bad .", 0),
             ("it is a dull and awful film", 0), ("the plot was poor .", 0), ("a good movie", 1)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


def classifier(tokenizer):
    """A tiny BERT classifier without dropout, so that train mode is deterministic."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
    return transformers.BertForSequenceClassification(config).train()


def examples():
    return [Example(tuple(text.split()), label) for text, label in SENTENCES]


class Shift:
    """A deterministic adversary (every embedding moved by the same small vector): the loss terms
    then depend on nothing random."""

    def embeddings(self, model, embeds, batch, objective):
        return embeds + 0.01


@pytest.mark.parametrize("method", ["standard", "adv", "rift"])
def test_the_loss_terms_on_cuda_match_the_cpu(tokenizer, method):
    model = classifier(tokenizer)
    teacher, critics = make_teacher(model), Critics(2, 32, 32)
    batch = tokenize(tokenizer, examples()[:4], 32)
    terms = []
    for device in (torch.device("cpu"), CUDA):
        model.to(device), teacher.to(device), critics.to(device)
        got = training_loss(method, model, batch.to(device), Shift(), teacher=teacher, critics=critics,
                            alpha=0.7, beta=5.0, feature="mean")
        terms.append({name: value.item() for name, value in got.items()})
    on_cpu, on_cuda = terms
    assert on_cuda == pytest.approx(on_cpu, rel=1e-4, abs=1e-5)


def test_ascc_weights_on_cuda_match_the_cpu(tokenizer):
    model = classifier(tokenizer)
    neighbours = neighbour_table(tokenizer, lambda word: TABLE.get(word, ()))
    batch = tokenize(tokenizer, examples(), 32)
    weights = []
    for device in (torch.device("cpu"), CUDA):
        model.to(device)
        on_device = batch.to(device)
        candidates = batch_candidates(neighbours.to(device), on_device)
        logits = model(input_ids=on_device["input_ids"], attention_mask=on_device["attention_mask"]).logits
        weights.append(ascc_weights(model, on_device, kl_objective(logits.detach()), candidates,
                                    generator=torch.Generator().manual_seed(3)).cpu())
    on_cpu, on_cuda = weights
    assert torch.allclose(on_cuda, on_cpu, atol=1e-4)


def test_bf16_autocast_keeps_rifts_loss_close_to_fp32(tokenizer):
    model = classifier(tokenizer).to(CUDA)
    teacher, critics = make_teacher(model), Critics(2, 32, 32).to(CUDA)
    batch = tokenize(tokenizer, examples()[:4], 32).to(CUDA)
    loss = {}
    for amp in (False, True):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss[amp] = training_loss("rift", model, batch, Shift(), teacher=teacher, critics=critics, alpha=0.7,
                                      beta=5.0, feature="mean")["loss"].item()
    assert loss[True] == pytest.approx(loss[False], rel=0.03)


def test_pwws_on_cuda_gives_the_same_outcomes_at_once_as_one_at_a_time(tokenizer):
    model = classifier(tokenizer).to(CUDA).eval()
    chosen = examples()
    outcomes = {}
    for at_once in (1, len(chosen)):
        with attacking.Victim(model, tokenizer, 32, batch_size=8) as victim:
            done = dict(attacking.attack_examples(victim, chosen, "pwws", lambda word: TABLE.get(word, ()),
                                                list(range(len(chosen))), at_once=at_once))
        outcomes[at_once] = [(done[n].status, done[n].perturbed) for n in range(len(chosen))]
    assert outcomes[1] == outcomes[len(chosen)]
    assert {status for status, _ in outcomes[1]} - {"skipped"}  # something was attacked
