"""What lets RIFT's own term work: critics that learn (--critic-lr), the model's own feature
(--feature), robust model selection (--select-on), and ASCC as an attack (evaluate.py --attack
ascc), each against an independent reference: S = T with a known ceiling, a mean by hand, the
teacher before fine-tuning, a brute-force worst vertex, re-tokenised texts."""

import itertools
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adversaries
import critics
import data
import rift
import train
from conftest import assert_one_line_error, run_cli
from attacking import Victim
from data import Example
from test_ascc import SENTENCES, SYNONYMS, LinearBag, synonyms

# ---------------------------------------------------------------------------------------------
# Critics that learn


@pytest.mark.slow
def test_critics_at_the_default_learning_rate_learn_s_equals_t_and_at_the_encoders_barely():
    """S = T: the bound is limited only by log B_y and by the critics. At rift.CRITIC_LR they get
    most of the way within 60 steps; at the encoder's 2e-5 they stay near 0."""
    torch.manual_seed(0)
    features = torch.randn(512, 32)  # (N, H)
    labels = [i % 2 for i in range(512)]
    settings = dict(critics.CRITICS, steps=60)
    ceiling = math.log(settings["batch_size"] // 2)
    fast = critics.critic_trajectory(features, labels, rift.CRITIC_LR, settings)
    slow = critics.critic_trajectory(features, labels, 2e-5, settings)
    assert abs(fast[0]) < 0.2 * ceiling  # random critics: S = T, yet the bound starts near 0
    assert statistics.fmean(fast[-10:]) > 0.7 * ceiling
    assert statistics.fmean(fast[-10:]) <= ceiling
    assert statistics.fmean(slow[-10:]) < 0.2 * ceiling


def test_presets_keep_the_releases_critic_learning_rate_and_a_flag_wins():
    assert train.parse_args([]).critic_lr == rift.CRITIC_LR
    assert train.parse_args(["--preset", "paper-imdb"]).critic_lr == 2e-5
    assert train.parse_args(["--preset", "paper-snli", "--critic-lr", "1e-3"]).critic_lr == 1e-3


@pytest.fixture(scope="module")
def rift_run(tiny_model, shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("term") / "rift"
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "rift",
                     "--adversary", "ascc", "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4,
                     "--max-length", 32, "--log-every", 1, "--eval-every", 2, "--select-examples", 8,
                     "--lr", "1e-4", "--critic-lr", "3e-3", "--feature", "mean", "--alpha", "0.1",
                     "--alpha-ramp-steps", 2, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_the_critics_have_their_own_group_at_their_own_rate_on_the_same_schedule(rift_run):
    groups = json.loads((rift_run / "last" / "training_state.json").read_text())["optimizer_groups"]
    assert [g["initial_lr"] for g in groups] == [1e-4, 1e-4, 3e-3]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.01, 0.01]
    assert groups[2]["lr"] / groups[2]["initial_lr"] == pytest.approx(groups[0]["lr"] / groups[0]["initial_lr"])
    critics = {k for k in load_file(rift_run / "last" / "training_state.safetensors") if k.startswith("critics.")}
    assert len(groups[2]["params"]) == len(critics)


@pytest.mark.slow
def test_the_mi_bound_is_logged_at_every_logged_step(rift_run):
    lines = [json.loads(line) for line in (rift_run / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2, 3, 4]
    assert all(line["mi_bound"] == pytest.approx(math.log(4) - line["mi_nce"], abs=1e-5) for line in steps)


def test_alpha_ramps_linearly_from_zero_only_when_asked():
    assert [rift.ramped_alpha(0.7, step, 4) for step in (1, 2, 4, 5, 100)] == pytest.approx([0.175, 0.35, 0.7, 0.7, 0.7])
    assert rift.ramped_alpha(0.7, 1, 0) == 0.7


@pytest.mark.slow
def test_the_loss_each_step_weighs_the_mi_term_with_that_steps_ramped_alpha(rift_run):
    steps = [line for line in map(json.loads, (rift_run / "metrics.jsonl").read_text().splitlines()) if "loss" in line]
    assert [line["alpha"] for line in steps] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    for line in steps:  # one step per logged window: the logged terms are that step's
        assert line["loss"] == pytest.approx(line["ce"] + 10 * line["kl"] + line["alpha"] * line["mi_nce"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The model's own feature


def test_mean_feature_is_the_attention_masked_mean_by_hand():
    hidden = torch.arange(24, dtype=torch.float).reshape(2, 4, 3)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    expected = torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)])
    assert torch.equal(rift.pooled(hidden, mask, "mean"), expected)
    assert torch.equal(rift.pooled(hidden, mask, "cls"), hidden[:, 0])


@pytest.fixture
def classifier(tiny_model):
    model, tokenizer = rift.load_classifier(str(tiny_model), num_labels=2)
    return model.eval(), tokenizer


@pytest.mark.parametrize("feature", ["cls", "mean", "pooler"])
def test_student_and_teacher_features_are_the_same_before_fine_tuning(classifier, feature):
    """S (classify, from word embeddings) and T (the frozen copy, from token ids) are one feature:
    before any step they coincide, and the pooler is the encoder's own pooler_output."""
    model, tokenizer = classifier
    batch = data.tokenize(tokenizer, [Example(tuple(s.split()), 0) for s in SENTENCES], 32)
    with torch.no_grad():
        _, s = rift.classify(model, model.get_input_embeddings()(batch["input_ids"]), batch, feature)
    t = rift.teacher_features(rift.make_teacher(model), batch, feature)
    assert s.shape == (len(SENTENCES), model.config.hidden_size)
    assert torch.allclose(s, t, atol=1e-5)
    if feature == "pooler":
        out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        assert torch.allclose(t, out.pooler_output, atol=1e-6)


@pytest.mark.parametrize("mode,amp", [("train", False), ("eval", False), ("train", True)])
def test_the_pooler_feature_is_bit_for_bit_the_tensor_the_classification_head_reads(classifier, mode, amp):
    """S on the classifier's own path, as in the release: with --feature pooler, S is the input of
    BertForSequenceClassification's head (its dropout, then its linear layer), captured by hooks on
    the same forward pass; in eval mode the dropout passes it on unchanged to the linear layer."""
    model, tokenizer = classifier
    getattr(model, mode)()
    batch = data.tokenize(tokenizer, [Example(tuple(s.split()), 0) for s in SENTENCES], 32)
    read = {}
    hooks = [module.register_forward_pre_hook(lambda module, args, name=name: read.setdefault(name, args[0]))
             for name, module in (("dropout", model.dropout), ("classifier", model.classifier))]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        _, s = rift.classify(model, model.get_input_embeddings()(batch["input_ids"]), batch, "pooler")
    for hook in hooks:
        hook.remove()
    assert s.dtype == read["dropout"].dtype and torch.equal(s, read["dropout"])
    assert torch.equal(s, read["classifier"]) == (mode == "eval")  # in train mode the head's dropout acts


def test_auto_takes_the_sentence_transformers_pooling_then_a_trained_pooler_then_cls(classifier, tiny_model, tmp_path):
    model, _ = classifier
    assert rift.resolve_feature("auto", model, str(tiny_model)) == "cls"  # its pooler's bias is exactly 0
    for mode, expected in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls")):
        folder = tmp_path / mode
        shutil.copytree(tiny_model, folder)
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({mode: True}))
        assert rift.resolve_feature("auto", model, str(folder)) == expected
    with torch.no_grad():
        model.base_model.pooler.dense.bias.add_(0.01)  # as next-sentence pre-training leaves it
    assert rift.resolve_feature("auto", model, str(tiny_model)) == "pooler"
    assert rift.resolve_feature("cls", model, str(tmp_path / "pooling_mode_mean_tokens")) == "cls"  # a flag wins


def test_the_default_model_resolves_to_its_mean_pooling():
    model, _ = rift.load_classifier(rift.DEFAULT_MODEL, num_labels=2)
    assert rift.resolve_feature("auto", model, rift.model_path(rift.DEFAULT_MODEL)) == "mean"
    assert model.base_model.pooler.dense.bias.abs().sum() == 0  # its pooler was never trained


def test_a_pooler_feature_without_a_pooler_is_a_usage_error(classifier):
    model, _ = classifier
    model.base_model.pooler = None
    with pytest.raises(data.UsageError, match="no pooler"):
        rift.resolve_feature("pooler", model, "unused")


@pytest.mark.slow
def test_the_run_records_its_feature(rift_run):
    config = json.loads((rift_run / "config.json").read_text())
    assert config["config"]["feature"] == "mean" and config["resolved"]["feature"] == "mean"
    assert json.loads((rift_run / "summary.json").read_text())["feature"] == "mean"


# ---------------------------------------------------------------------------------------------
# Robust model selection


def test_better_compares_by_the_selection_rule():
    low_robust = {"step": 1, "dev_accuracy": 0.9, "dev_robust_accuracy": 0.2}
    high_robust = {"step": 2, "dev_accuracy": 0.7, "dev_robust_accuracy": 0.4}
    tie_cleaner = {"step": 3, "dev_accuracy": 0.8, "dev_robust_accuracy": 0.4}
    assert train.better(high_robust, low_robust, "robust") and not train.better(low_robust, high_robust, "robust")
    assert train.better(tie_cleaner, high_robust, "robust") and not train.better(high_robust, tie_cleaner, "robust")
    assert train.better(low_robust, high_robust, "clean") and not train.better(high_robust, low_robust, "clean")
    assert train.better(low_robust, tie_cleaner, "last")


@pytest.fixture(scope="module")
def selected(tiny_model, shared_data, tmp_path_factory) -> dict[str, Path]:
    """The same adv run under each selection rule, evaluated at every step."""
    root = tmp_path_factory.mktemp("select")
    runs = {}
    for rule in ("clean", "robust", "last"):
        runs[rule] = root / rule
        result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "adv",
                         "--adversary", "ascc", "--max-train-examples", 64, "--batch-size", 8, "--max-steps", 4,
                         "--max-length", 32, "--eval-every", 1, "--select-examples", 16, "--lr", "1e-3",
                         "--select-on", rule, "--seed", 5, "--out", runs[rule])
        assert result.returncode == 0, result.stderr[-3000:]
    return runs


def evaluations(run: Path) -> list[dict]:
    return [line for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "dev_accuracy" in line]


@pytest.mark.slow
def test_the_selection_rule_changes_only_which_checkpoint_is_kept(selected):
    """Selection attacks with its own random generator: the training itself is bit for bit the same."""
    weights = {rule: load_file(run / "last" / "model.safetensors") for rule, run in selected.items()}
    for rule in ("robust", "last"):
        assert weights[rule].keys() == weights["clean"].keys()
        assert all(torch.equal(weights[rule][k], weights["clean"][k]) for k in weights["clean"])
    dev = {rule: [line["dev_accuracy"] for line in evaluations(run)] for rule, run in selected.items()}
    assert dev["clean"] == dev["robust"] == dev["last"]


@pytest.mark.slow
def test_each_rule_keeps_the_checkpoint_it_names(selected):
    summaries = {rule: json.loads((run / "summary.json").read_text()) for rule, run in selected.items()}
    clean, robust = evaluations(selected["clean"]), evaluations(selected["robust"])
    assert summaries["clean"]["best_step"] == max(clean, key=lambda e: (e["dev_accuracy"], -e["step"]))["step"]
    best = max(robust, key=lambda e: (e["dev_robust_accuracy"], e["dev_accuracy"], -e["step"]))
    assert summaries["robust"]["best_step"] == best["step"]
    assert summaries["robust"]["best_dev_robust_accuracy"] == best["dev_robust_accuracy"]
    assert summaries["last"]["best_step"] == 4
    assert all("dev_robust_accuracy" not in e for e in clean) and all("dev_robust_accuracy" in e for e in robust)
    assert [s["select_on"] for s in summaries.values()] == ["clean", "robust", "last"]
    kept = load_file(selected["last"] / "best" / "model.safetensors")
    final = load_file(selected["last"] / "last" / "model.safetensors")
    assert all(torch.equal(kept[k], final[k]) for k in final)


@pytest.mark.slow
def test_robust_selection_is_the_default_for_adv_and_rift_and_clean_for_standard(tiny_model, shared_data, tmp_path):
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "standard",
                     "--max-train-examples", 32, "--batch-size", 8, "--max-steps", 1, "--max-length", 32,
                     "--out", tmp_path / "standard")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "standard" / "summary.json").read_text())["select_on"] == "clean"
    assert json.loads((tmp_path / "standard" / "config.json").read_text())["resolved"]["select_on"] == "clean"


@pytest.mark.slow
def test_robust_selection_under_pgd_attacks_with_pgd_and_leaves_the_training_alone(tiny_model, shared_data, tmp_path):
    """With the PGD adversary no neighbour table is needed (the offline demo trains so)."""
    for rule in ("clean", "robust"):
        result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "adv",
                         "--max-train-examples", 32, "--batch-size", 8, "--max-steps", 3, "--max-length", 32,
                         "--eval-every", 1, "--select-examples", 8, "--adv-eps", 1.0, "--select-on", rule,
                         "--out", tmp_path / rule)
        assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "robust" / "config.json").read_text())["resolved"]
    assert config["select_on"] == "robust" and config["select_attack"] == "pgd" and "ascc" not in config
    assert all("dev_robust_accuracy" in e for e in evaluations(tmp_path / "robust"))
    clean, robust = (load_file(tmp_path / rule / "last" / "model.safetensors") for rule in ("clean", "robust"))
    assert all(torch.equal(clean[k], robust[k]) for k in clean)


@pytest.mark.slow
def test_robust_selection_without_the_neighbour_table_is_a_one_line_error(tiny_model, shared_data, tmp_path):
    result = run_cli("--model", tiny_model, "--task", "sst2", "--data-dir", shared_data, "--method", "adv",
                     "--adversary", "ascc", "--synonyms-path", tmp_path / "missing.json", "--max-train-examples", 32,
                     "--batch-size", 8, "--max-steps", 1, "--max-length", 32, "--out", tmp_path / "adv")
    assert_one_line_error(result, "missing.json")
    assert not (tmp_path / "adv").exists()


# ---------------------------------------------------------------------------------------------
# ASCC as an attack


@pytest.fixture
def sharp(classifier):
    model, tokenizer = classifier
    torch.manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)  # so that the random model's output depends on its input
    return model, tokenizer


def test_ascc_substitution_picks_the_worst_vertex_of_a_linear_model_found_by_brute_force():
    """Aimed at the true label: the chosen words are those that push p(y) lowest."""
    torch.manual_seed(1)
    model = LinearBag(40, 6, torch.randn(6))
    score = model.embed.weight.detach() @ model.w.detach()  # each token's push towards class 1
    groups = [torch.arange(0, 4), torch.arange(10, 13), torch.arange(20, 22)]
    candidates = torch.full((1, 5, 4), -1)
    candidates[0, :, 0] = torch.tensor([30, 0, 10, 20, 31])
    for t, g in enumerate(groups, 1):
        candidates[0, t, :len(g)] = g
    batch = {"input_ids": candidates[..., 0], "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "labels": torch.tensor([0])}
    best = max(itertools.product(*[g.tolist() for g in groups]), key=lambda choice: score[list(choice)].sum().item())
    chosen = adversaries.ascc_substitution(model, batch, candidates)
    assert tuple(chosen[0, 1:4].tolist()) == best
    assert chosen[0, 0] == 30 and chosen[0, 4] == 31  # positions without candidates stay


def test_ascc_attack_changes_words_only_into_their_neighbours_and_scores_the_text_it_reports(sharp, tiny_model):
    model, tokenizer = sharp
    table = adversaries.neighbour_table(tokenizer, synonyms)
    examples = [Example(tuple(s.split()), i % 2) for i, s in enumerate(SENTENCES)]
    with Victim(model, tokenizer, 32, batch_size=2) as victim:
        results = dict(adversaries.ASCC(table).attack(victim, examples, [[3, n] for n in range(len(examples))]))
    assert sorted(results) == list(range(len(examples)))
    changed_any = False
    for n, result in results.items():
        original, perturbed = result.original, result.perturbed
        assert len(perturbed) == len(original)
        for before, after in zip(original, perturbed):
            assert after == before or after in SYNONYMS[before]
            changed_any |= after != before
        probs = rift.predict_proba(model, tokenizer, [examples[n]], 32, words=[perturbed])[0]
        if result.status != "skipped":
            assert torch.allclose(probs, torch.tensor(result.probs_after), atol=1e-6)
            assert (result.status == "successful") == (int(probs.argmax()) != examples[n].label)
    assert changed_any


def test_ascc_attack_gives_each_chunk_the_same_texts_whatever_ran_before(sharp):
    model, tokenizer = sharp
    table = adversaries.neighbour_table(tokenizer, synonyms)
    examples = [Example(tuple(s.split()), i % 2) for i, s in enumerate(SENTENCES)]
    seeds = [[3, n] for n in range(len(examples))]
    with Victim(model, tokenizer, 32, batch_size=2) as victim:
        whole = dict(adversaries.ASCC(table).attack(victim, examples, seeds))
        resumed = dict(adversaries.ASCC(table).attack(victim, examples, seeds, done={0, 1, 2}))
    assert sorted(resumed) == [3]
    assert all(resumed[n].perturbed == whole[n].perturbed and resumed[n].status == whole[n].status for n in resumed)


@pytest.mark.slow
def test_evaluate_ascc_writes_the_records_of_every_attack(rift_run, shared_data, tmp_path):
    out = tmp_path / "ascc"
    result = run_cli("--checkpoint", rift_run, "--attack", "ascc", "--num-examples", 6, "--data-dir", shared_data,
                     "--out", out, script="evaluate.py")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["complete"] and report["metrics"][1]["attack"] == "ascc"
    assert report["metrics"][1]["synonyms"] == "counterfitted" and report["metrics"][1]["examples"] == 6
    lines = [json.loads(line) for line in (out / "adversarial.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and {line["attack"] for line in lines} == {"ascc"}
    assert sorted(line["index"] for line in lines) == sorted(report["indices"])
