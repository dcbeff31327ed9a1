"""Fine-tune a pre-trained encoder with RIFT, or with one of the two baselines it is compared to.

    python train.py --task sst2                          # RIFT, default model (MiniLM), SST-2
    python train.py --task sst2 --method standard        # plain cross-entropy fine-tuning
    python train.py --task sst2 --method adv             # CE + beta * KL on the PGD adversary
    python train.py --task sst2 --adversary ascc         # the paper's adversary: convex hulls of synonyms
    python train.py --preset paper-imdb                  # the paper's IMDB settings (bert-base-uncased)
    torchrun --nproc-per-node 4 train.py --task sst2     # DDP: NCCL on GPUs, gloo on CPUs

A run folder (--out, default runs/<task>-<method>-<time>) receives
    config.json     every setting, the seed, the versions and the machine
    metrics.jsonl   one line per logged step (loss terms, MI bound, examples/s) and per dev evaluation
    best/           the checkpoint with the best dev accuracy, a Hugging Face model folder
    summary.json    the final numbers, also printed as a table
"""

import argparse
import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

import attacks
from data import (DEFAULT_TASK, TASKS, UsageError, at_least, balanced_batches, custom_task, environment,
                  format_table, fraction, infer_labels, load_split, pick_device, run_command, tokenize)
from rift import (ADVERSARIES, ASCC_ENTROPY, DEFAULT_MODEL, METHODS, Critics, load_classifier, make_teacher,
                  model_path, neighbour_table, predict_proba, training_loss)

# The paper's settings (REFERENCE.md section 2; the release's rift_train.sh and opts.py). A preset
# only sets defaults: any flag given wins. bert-base-uncased needs the hub or a local copy (not
# reachable on an offline machine): with --model another encoder runs the preset's other settings.
# Not reproduced: the release's learning rate stays flat after its warm-up; here it decays linearly.
PRESETS = {
    "paper-imdb": dict(task="imdb", model="bert-base-uncased", max_length=300, batch_size=32, epochs=20.0,
                       alpha=0.1, beta=10.0, lr=2e-5, weight_decay=2e-4, adversary="ascc"),
    "paper-snli": dict(task="snli", model="bert-base-uncased", max_length=80, batch_size=120, epochs=20.0,
                       alpha=0.7, beta=5.0, lr=2e-5, weight_decay=2e-4, adversary="ascc"),
}


def parse_args(argv=None) -> argparse.Namespace:
    """Every setting and its default, in one place; config.json records them all."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS,
                   help="the paper's settings for IMDB or SNLI: task, model (bert-base-uncased), max length, batch "
                        "size, epochs, alpha, beta, lr, weight decay, adversary ascc; flags given explicitly win, "
                        "so --model runs them on any encoder")
    data = p.add_argument_group("data")
    data.add_argument("--task", default=DEFAULT_TASK, choices=[*TASKS, "custom"],
                      help="task to train on; 'custom' reads --train-file/--dev-file (default: %(default)s)")
    data.add_argument("--data-dir", help="folder holding <task>/{train,dev,test}.tsv (else $RIFT_DATA, else the cache)")
    data.add_argument("--train-file", help="a .tsv/.csv/.jsonl file to train on instead of the task's")
    data.add_argument("--dev-file", help="a .tsv/.csv/.jsonl file for model selection instead of the task's")
    data.add_argument("--text-column", default="text", help="custom task: column of the text (the one attacks change)")
    data.add_argument("--label-column", default="label", help="custom task: column of the label")
    data.add_argument("--context-column", help="custom task: column of a first sentence that is never attacked")
    data.add_argument("--labels", help="custom task: label values in class order, comma-separated "
                                       "(default: those of the train file, sorted)")
    data.add_argument("--max-train-examples", type=at_least(1), help="train on a random subset of this size (drawn with --seed)")
    data.add_argument("--max-length", type=at_least(1), help="tokens per example (default: the task's: 64 Rotten Tomatoes and SST-2, 256 IMDB, 80 SNLI, 128 custom)")
    method = p.add_argument_group("model and method")
    method.add_argument("--model", default=DEFAULT_MODEL,
                        help="pre-trained encoder: local folder or hub name (paper: bert-base-uncased; default: %(default)s)")
    method.add_argument("--method", default="rift", choices=METHODS,
                        help="standard: CE; adv: CE + beta KL(p(x)||p(x_adv)); rift: adv + alpha InfoNCE (default: %(default)s)")
    method.add_argument("--alpha", type=at_least(0.0, float), default=0.1, help="weight of the InfoNCE term I(S;T|Y) (paper: IMDB 0.1, SNLI 0.7)")
    method.add_argument("--beta", type=at_least(0.0, float), default=10.0, help="weight of the adversarial KL term (paper: IMDB 10, SNLI 5)")
    method.add_argument("--tau", type=at_least(1e-3, float), default=0.2, help="InfoNCE temperature (paper: 0.2)")
    method.add_argument("--adversary", default="pgd", choices=ADVERSARIES,
                        help="pgd: embedding-space PGD (--adv-*); ascc: the paper's, each word a convex combination "
                             "of its counter-fitted synonyms' embeddings (--ascc-*) (default: %(default)s)")
    method.add_argument("--adv-norm", default="l2", choices=["l2", "linf"], help="PGD ball, per token (default: %(default)s)")
    method.add_argument("--adv-eps", type=at_least(0.0, float), default=0.1,
                        help="PGD radius per token in embedding space; all words move at once (default: %(default)s)")
    method.add_argument("--adv-steps", type=at_least(1), default=3, help="PGD steps per batch (default: %(default)s)")
    method.add_argument("--ascc-steps", type=at_least(1), default=10, help="ASCC Adam steps per batch (paper: 10)")
    method.add_argument("--ascc-lr", type=at_least(0.0, float), default=1.0, help="ASCC Adam learning rate (paper: 1)")
    method.add_argument("--ascc-entropy", type=at_least(0.0, float), default=ASCC_ENTROPY,
                        help="ASCC: weight of the weights' entropy per word, which keeps them near one synonym "
                             "(paper: 15 / (300 x 128))")
    method.add_argument("--synonyms-path", help="ASCC: the neighbour table, JSON word -> neighbours (default: "
                                                "synonyms/counterfitted_neighbors.json under --data-dir, $RIFT_DATA or the cache)")
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=at_least(1e-3, float), default=3.0, help="passes over the training data (default: %(default)s)")
    optim.add_argument("--max-steps", type=at_least(1), help="stop after this many optimiser steps (overrides --epochs)")
    optim.add_argument("--batch-size", type=at_least(1), default=32,
                       help="examples per forward pass and process, a multiple of the classes (default: %(default)s)")
    optim.add_argument("--grad-accum", type=at_least(1), default=1, help="forward passes per optimiser step (default: %(default)s)")
    optim.add_argument("--lr", type=at_least(0.0, float), default=2e-5, help="peak AdamW learning rate (paper: 2e-5)")
    optim.add_argument("--weight-decay", type=at_least(0.0, float), default=0.01, help="AdamW weight decay, on the heads only as in the paper")
    optim.add_argument("--warmup", type=fraction, default=0.1,
                       help="share of steps with linear learning-rate warm-up, then linear decay to 0 (default: %(default)s)")
    optim.add_argument("--max-grad-norm", type=at_least(1e-6, float), default=1.0, help="gradient clipping norm (default: %(default)s)")
    run = p.add_argument_group("bookkeeping")
    run.add_argument("--eval-every", type=at_least(1), help="optimiser steps between dev evaluations (default: once per epoch)")
    run.add_argument("--log-every", type=at_least(1), default=10, help="optimiser steps between metrics.jsonl lines (default: %(default)s)")
    run.add_argument("--seed", type=int, default=42, help="seeds python, numpy and torch; draws the subset and the batches")
    run.add_argument("--out", help="run folder (default: runs/<task>-<method>-<time>); must not exist yet")
    run.add_argument("--device", default="auto", help="cpu, cuda, or auto: cuda when there is one (torchrun: one GPU per process)")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on with CUDA)")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; the first steps are slow)")
    preset = p.parse_known_args(argv)[0].preset
    if preset:
        p.set_defaults(**PRESETS[preset])
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def setup_distributed(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun each process takes the GPU of its local rank
    (NCCL), or shares the CPU (gloo)."""
    device = pick_device(device_flag)
    if "RANK" not in os.environ:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def accuracy(model, tokenizer, examples, max_length: int, amp: bool) -> float:
    probs = predict_proba(model, tokenizer, examples, max_length, batch_size=128, amp=amp)
    return (probs.argmax(-1) == torch.tensor([ex.label for ex in examples])).float().mean().item()


def save_checkpoint(model, tokenizer, folder: Path, labels: tuple[str, ...]) -> None:
    """A standard Hugging Face folder (config, safetensors, tokenizer), written beside the old one
    and then swapped in, so a crash mid-write never loses the previous best."""
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    staging, old = folder.with_name(folder.name + ".saving"), folder.with_name(folder.name + ".old")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def main(cfg: argparse.Namespace) -> dict:
    rank, world_size, device = setup_distributed(cfg.device)
    is_main = rank == 0
    amp = device.type == "cuda" if cfg.amp is None else cfg.amp
    seed_everything(cfg.seed)

    # ---- data
    if cfg.task == "custom":
        if not cfg.train_file or not cfg.dev_file:
            raise UsageError("--task custom needs --train-file and --dev-file")
        labels = tuple(cfg.labels.split(",")) if cfg.labels else infer_labels(cfg.train_file, cfg.label_column)
        task = custom_task(cfg.text_column, cfg.label_column, cfg.context_column, labels)
    else:
        task = TASKS[cfg.task]
    max_length = cfg.max_length or task.max_length
    run = Path(cfg.out or f"runs/{task.name}-{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}")
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise UsageError(f"run folder {run} already exists; pass a new --out")
    if world_size > 1 and not is_main:
        dist.barrier()  # rank 0 downloads into the cache first; the others then read it
    train = load_split(task, "train", cfg.data_dir, cfg.train_file)
    dev = load_split(task, "dev", cfg.data_dir, cfg.dev_file)
    ascc = cfg.adversary == "ascc" and cfg.method != "standard"
    synonyms, synonym_source = attacks.counterfitted_synonyms(cfg.synonyms_path, cfg.data_dir) if ascc else (None, None)
    if world_size > 1 and is_main:
        dist.barrier()
    if cfg.max_train_examples and cfg.max_train_examples < len(train):
        train = random.Random(cfg.seed).sample(train, cfg.max_train_examples)
    num_classes = len(task.labels)
    if cfg.method == "rift" and cfg.batch_size < 2 * num_classes:
        raise UsageError(f"rift needs --batch-size >= {2 * num_classes}: two examples of each class, for InfoNCE")
    batches = balanced_batches([ex.label for ex in train], num_classes, cfg.batch_size, cfg.seed, rank, world_size)
    steps_per_epoch = len(train) // (cfg.batch_size * cfg.grad_accum * world_size)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    if total_steps < 1:
        raise UsageError(f"{len(train)} training examples make no full step of "
                         f"{cfg.batch_size * cfg.grad_accum * world_size}; lower --batch-size or pass --max-steps")
    eval_every = cfg.eval_every or steps_per_epoch or total_steps

    # ---- models: the student, and for RIFT the frozen teacher and the critics
    model, tokenizer = load_classifier(cfg.model, num_labels=num_classes)
    if max_length > model.config.max_position_embeddings:
        raise UsageError(f"--max-length {max_length} exceeds the model's {model.config.max_position_embeddings} positions")
    neighbours = neighbour_table(tokenizer, synonyms).to(device) if ascc else None
    teacher = critics = None
    if cfg.method == "rift":
        teacher = make_teacher(model).to(device)
        critics = Critics(num_classes, model.config.hidden_size, teacher.config.hidden_size).to(device)
    model.to(device)
    head_params = [p for n, p in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")]
    head_params += list(critics.parameters()) if critics else []
    encoder_params = list(model.base_model.parameters())
    optimizer = torch.optim.AdamW([{"params": encoder_params, "weight_decay": 0.0},
                                   {"params": head_params, "weight_decay": cfg.weight_decay}], lr=cfg.lr)
    warmup_steps = int(cfg.warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(warmup_steps, 1), max(0.0, (total_steps - s) / max(total_steps - warmup_steps, 1))))
    bare = model
    if world_size > 1:
        # The encoder's buffers (position ids) never change: no need to broadcast them every forward.
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
        for p in critics.parameters() if critics else []:  # DDP aligned the student; align the critics
            dist.broadcast(p.data, 0)
    if cfg.compile:
        model = torch.compile(model, dynamic=True)

    # ---- run folder
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        resolved = {"labels": task.labels, "max_length": max_length, "model_path": model_path(cfg.model),
                    "train_examples": len(train), "dev_examples": len(dev), "total_steps": total_steps,
                    "steps_per_epoch": steps_per_epoch, "amp": amp, "task_source": task.source}
        if neighbours is not None:
            resolved["ascc"] = synonym_source | {
                "vocabulary_words_with_neighbours": int((neighbours.ids[:, 1] >= 0).sum()),
                "mean_neighbours_of_those": round(float((neighbours.ids[:, 1:] >= 0).sum() /
                                                        (neighbours.ids[:, 1] >= 0).sum().clamp(min=1)), 3)}
        (run / "config.json").write_text(json.dumps({"config": vars(cfg), "resolved": resolved,
                                                     "environment": environment(device) | {"world_size": world_size}},
                                                    indent=2))
    metrics = open(run / "metrics.jsonl", "a") if is_main else None

    def log(record: dict) -> None:
        if is_main:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    # ---- the training loop
    loss_kwargs = dict(teacher=teacher, critics=critics, alpha=cfg.alpha, beta=cfg.beta, tau=cfg.tau,
                       eps=cfg.adv_eps, steps=cfg.adv_steps, norm=cfg.adv_norm, adversary=cfg.adversary,
                       neighbours=neighbours, ascc_steps=cfg.ascc_steps, ascc_lr=cfg.ascc_lr,
                       ascc_entropy=cfg.ascc_entropy)
    best_dev, best_step, window, steps_in_window = -1.0, 0, {}, 0
    started, eval_seconds = time.perf_counter(), 0.0  # training time = wall time - dev evaluations
    model.train()
    bar = tqdm(range(1, total_steps + 1), desc=f"{cfg.method} {task.name}", disable=not is_main, dynamic_ncols=True)
    for step in bar:
        for micro in range(cfg.grad_accum):
            batch = tokenize(tokenizer, [train[i] for i in next(batches)], max_length).to(device)
            last_micro = micro == cfg.grad_accum - 1
            with (model.no_sync() if world_size > 1 and not last_micro else nullcontext()), \
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                terms = training_loss(cfg.method, model, batch, **loss_kwargs)
            (terms["loss"] / cfg.grad_accum).backward()
            for name, value in terms.items():  # summed as tensors: no .item() until a log line
                window[name] = window.get(name, 0.0) + value.detach() / cfg.grad_accum
        if critics and world_size > 1:  # the critics live outside DDP: average their gradients here
            for p in critics.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world_size
        window["grad_norm"] = window.get("grad_norm", 0.0) + torch.nn.utils.clip_grad_norm_(
            encoder_params + head_params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps_in_window += 1

        if step % cfg.log_every == 0 or step == total_steps:
            record = {name: value.item() / steps_in_window for name, value in window.items()}
            train_seconds = time.perf_counter() - started - eval_seconds  # .item() waited for the device
            examples_per_s = step * cfg.batch_size * cfg.grad_accum * world_size / train_seconds
            log({"step": step, "epoch": round(step / max(steps_per_epoch, 1), 3), "lr": scheduler.get_last_lr()[0],
                 **record, "examples_per_s": examples_per_s, "elapsed_s": train_seconds})
            bar.set_postfix(loss=f"{record['loss']:.3f}", ex_s=f"{examples_per_s:.1f}")
            window, steps_in_window = {}, 0
        if step % eval_every == 0 or step == total_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()  # pending training work is not evaluation time
            eval_started = time.perf_counter()
            if is_main:
                dev_accuracy = accuracy(bare, tokenizer, dev, max_length, amp)
                if dev_accuracy > best_dev:
                    best_dev, best_step = dev_accuracy, step
                    save_checkpoint(bare, tokenizer, run / "best", task.labels)
                log({"step": step, "dev_accuracy": dev_accuracy, "best_dev_accuracy": best_dev})
                bar.write(f"step {step}: dev accuracy {dev_accuracy:.4f} (best {best_dev:.4f} at step {best_step})")
            if world_size > 1:
                dist.barrier()
            eval_seconds += time.perf_counter() - eval_started

    summary = {"run": str(run), "task": task.name, "method": cfg.method,
               "adversary": cfg.adversary if cfg.method != "standard" else None, "model": cfg.model,
               "train_examples": len(train), "steps": total_steps, "best_dev_accuracy": best_dev,
               "best_step": best_step, "final_dev_accuracy": dev_accuracy if is_main else None,
               "train_examples_per_s": total_steps * cfg.batch_size * cfg.grad_accum * world_size / train_seconds,
               "train_minutes": train_seconds / 60, "world_size": world_size}
    if cfg.method == "rift":
        summary["last_mi_bound"] = record["mi_bound"]  # the last logged window's mean
    if world_size > 1:  # every replica must end with the same weights, critics included
        checksum = torch.stack([p.detach().double().sum() for p in encoder_params + head_params]).sum()
        sums = [torch.zeros_like(checksum) for _ in range(world_size)]
        dist.all_gather(sums, checksum)
        summary["replicas_in_sync"] = all(torch.equal(s, sums[0]) for s in sums)
    if is_main:
        metrics.close()
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"\n{cfg.method} on {task.name}: {run}")
        print(format_table([{"key": k, "value": v} for k, v in summary.items() if k != "run"], {"key": "", "value": ""}))
    if world_size > 1:
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    run_command(lambda: main(parse_args()))
