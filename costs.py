"""What a training step of each method costs, timed in turns on the same batches so that the
machine's drift falls on all alike: bench.py's cost table, and the GPU check's speeds
(experiments/gpu_check.py); and the tiny random models that `--smoke` times and trains."""

import resource
import statistics
import time
from pathlib import Path

import torch
import transformers

from adversaries import ASCC, PGD, FreeLB, ascc_weights, batch_candidates, neighbour_table, pgd_perturbation
from data import tokenize
from rift import (ALPHA, BETA, DEFAULT_MODEL, METHODS, TAU, Critics, classify, kl_objective, load_classifier, make_teacher,
                  model_path, resolve_feature, teacher_features, training_loss)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA's allocator peak, or the process's resident high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timings(fns: dict, batches, repeats: int, device: torch.device) -> tuple[dict, dict]:
    """(median seconds, peak memory MB) of each fn over the batches.

    Each fn first makes one untimed warm-up pass, in the given order, and its peak memory is read
    after it (cheapest first, so the CPU's resident high-water mark reads each one's own peak).
    Then they are timed in turns, batch by batch, so a drift in the machine's speed (a shared CPU
    varies by 10-20% from minute to minute) falls on all of them alike."""
    peaks = {}
    for name, fn in fns.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for batch in batches:
            fn(batch)
        peaks[name] = peak_memory_mb(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for batch in batches:
            for name, fn in fns.items():
                started = time.perf_counter()
                fn(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}, peaks


def training_cost(model_name: str, examples, device, batch_size: int, steps: int, eps: float,
                  max_length: int, repeats: int, adversary: str = "pgd", synonyms=None, amp: bool = False) -> list[dict]:
    """Seconds per optimiser step of each method; `steps` are PGD's or ASCC's, as `adversary` says."""
    model, tokenizer = load_classifier(model_name, num_labels=2)
    neighbours = neighbour_table(tokenizer, synonyms).to(device) if adversary == "ascc" else None
    training_adversary = ASCC(neighbours, steps) if adversary == "ascc" else PGD(eps, steps)
    teacher = make_teacher(model).to(device)
    model.to(device).train()
    critics = Critics(2, model.config.hidden_size, teacher.config.hidden_size).to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), *critics.parameters()], lr=1e-5)
    by_class = [[ex for ex in examples if ex.label == c] for c in (0, 1)]
    half = batch_size // 2
    batches = [tokenize(tokenizer, by_class[0][i * half:(i + 1) * half] + by_class[1][i * half:(i + 1) * half],
                        max_length).to(device) for i in range(4)]
    feature = resolve_feature("auto", model, model_path(model_name))  # S and T where train.py takes them
    loss_kwargs = dict(teacher=teacher, critics=critics, alpha=ALPHA, beta=BETA, tau=TAU, feature=feature)

    def optimiser_step(method):
        def step(batch):
            if method == "freelb":
                FreeLB().backward(model, batch)  # its K backward passes
            else:
                training_loss(method, model, batch, training_adversary, **loss_kwargs)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    # The passes, each timed alone.
    def forward_backward(batch):
        logits, _ = classify(model, model.get_input_embeddings()(batch["input_ids"]), batch)
        torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
        optimizer.zero_grad(set_to_none=True)

    def attack(batch):  # the K steps of the adversary, each a forward pass and a backward pass to its inputs
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
        clean_logits = torch.zeros(len(embeds), 2, device=device)  # the target is given in training
        if adversary == "ascc":
            ascc_weights(model, batch, kl_objective(clean_logits), batch_candidates(neighbours, batch), steps)
        else:
            pgd_perturbation(model, embeds, batch, kl_objective(clean_logits), eps, steps, training_adversary.norm)

    def autocast(fn):
        def under_autocast(batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                fn(batch)
        return under_autocast

    passes = {"forward_backward": forward_backward, "attack": attack, "teacher": lambda b: teacher_features(teacher, b, feature)}
    methods = (*METHODS, "freelb")
    fns = {method: optimiser_step(method) for method in methods} | passes
    t, peaks = timings({name: autocast(fn) for name, fn in fns.items()}, batches, repeats, device)
    rows = [{"method": method, "s_per_step": t[method], "peak_memory_mb": peaks[method]} for method in methods]
    t_standard = rows[0]["s_per_step"]
    expected = {"standard": t_standard,
                "adv": t_standard + t["forward_backward"] + t["attack"],
                "rift": t_standard + t["forward_backward"] + t["attack"] + t["teacher"],
                "freelb": FreeLB().steps * t_standard}  # K forward and backward passes, one optimiser step
    for row in rows:
        row |= {"ratio_to_standard": row["s_per_step"] / t_standard,
                "expected_ratio": expected[row["method"]] / t_standard,
                "measured_over_expected": row["s_per_step"] / expected[row["method"]],
                "examples_per_s": batch_size / row["s_per_step"]}
    rows.append({"method": "passes", "forward_backward_s": t["forward_backward"], "attack_s": t["attack"],
                 "teacher_forward_s": t["teacher"]})
    return rows


def tiny_model(folder: Path) -> str:
    """A 2-layer random BERT encoder with the default model's tokenizer: the smoke runs' model."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path(DEFAULT_MODEL))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(folder)  # a pre-trained encoder: any number of classes
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_classifier(encoder: str, folder: Path) -> str:
    """The encoder with a (random, untrained) classification head, saved as a classifier folder that
    evaluate.py accepts without a train.py run."""
    model, tokenizer = load_classifier(encoder, num_labels=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
