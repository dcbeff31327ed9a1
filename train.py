"""Fine-tune a pre-trained encoder with RIFT, or with one of the two baselines it is compared to.

    python train.py --task sst2                          # RIFT, default model (MiniLM), SST-2
    python train.py --task sst2 --method standard        # plain cross-entropy fine-tuning
    python train.py --task sst2 --method adv             # CE + beta * KL on the PGD adversary
    python train.py --task sst2 --adversary ascc         # the paper's adversary: convex hulls of synonyms
    python train.py --task sst2 --method freelb          # FreeLB, the baseline defence (Zhu et al. 2020)
    python train.py --preset paper-imdb                  # the paper's IMDB settings (bert-base-uncased)
    torchrun --nproc-per-node 4 train.py --task sst2     # DDP: NCCL on GPUs, gloo on CPUs
    python train.py --resume runs/sst2-rift-20261125-120000   # continue a killed or stopped run

A run folder (--out, default runs/<task>-<method>-<time>) receives
    config.json     every setting, the seed, each data file's sha256, the versions and the machine (and each resumption)
    metrics.jsonl   one line per logged step (loss terms, MI bound, examples/s) and per dev evaluation
    best/           the selected checkpoint (--select-on: for adv and rift the best dev accuracy under
                    the training adversary as an attack, for standard and freelb the best clean dev accuracy),
                    a Hugging Face model folder
    last/           the latest state, every --save-every steps, at the end and on Ctrl-C: the model
                    (a Hugging Face folder), critics, optimiser, schedule, sampler position, random
                    states. --resume continues from it and ends as if the run had never stopped.
    summary.json    the final numbers, also printed as a table

Folders are written beside the old ones, synced to disk and renamed into place, so a kill at any
moment leaves the previous best/ and last/ whole.
"""

import argparse
import math
import random
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import synonyms
from adversaries import (ADVERSARIES, ASCC, ASCC_ENTROPY, ASCC_LR, ASCC_STEPS, FREELB_INIT, FREELB_LR,
                         FREELB_MAX_NORM, FREELB_STEPS, PGD, PGD_EPS, PGD_NORM, PGD_STEPS, FreeLB, Neighbours,
                         neighbour_table)
from attacks import sample_examples
from checkpoints import (FLAGS_RESUME_MAY_CHANGE, LoopState, RunFolder, TrainingClock, load_training_state,
                         restored_loop, resumed_settings)
from cli import (add_data_flags, at_least, environment, fraction, pick_device, positive, process_group, random_seed,
                 run_command, SEED)
from data import (DEFAULT_TASK, TASKS, Task, UsageError, balanced_batches, custom_task, file_sha256, infer_labels, load_split,
                  split_file, tokenize)
from attacking import Victim, summarize
from processes import average_gradients, check_finite, distribute, exit_stopped, stop_on_signals
from rift import (ALPHA, BATCH_SIZE, BETA, CRITIC_LR, DEFAULT_MODEL, FEATURES, LR, METHODS, TAU, WARMUP, WEIGHT_DECAY,
                  Critics, build_optimizer, load_classifier, loss_terms, make_teacher, model_path, predict_proba,
                  ramped_alpha, resolve_feature, term_pulls)

# The paper's settings (the release's rift_train.sh and opts.py; docs/method.md). A preset
# only sets defaults: any flag given wins. bert-base-uncased needs the hub or a local copy (not
# reachable on an offline machine): with --model another encoder runs the preset's other settings.
# Not reproduced: the release's learning rate stays flat after its warm-up; here it decays linearly.
# The release trains its critics at the encoder's learning rate, over about 15,600 steps (this
# project's own rate: rift.CRITIC_LR).
PRESETS = {
    "paper-imdb": dict(task="imdb", model="bert-base-uncased", max_length=300, batch_size=32, epochs=20.0,
                       alpha=ALPHA, beta=BETA, lr=2e-5, critic_lr=2e-5, weight_decay=2e-4, adversary="ascc"),
    "paper-snli": dict(task="snli", model="bert-base-uncased", max_length=80, batch_size=120, epochs=20.0,
                       alpha=0.7, beta=5.0, lr=2e-5, critic_lr=2e-5, weight_decay=2e-4, adversary="ascc"),
}
TRAIN_METHODS = (*METHODS, "freelb")  # rift.py's losses, and FreeLB (adversaries.py), whose K steps run their own backward
SELECT_EXAMPLES = 300  # dev sentences attacked by ASCC at each evaluation under --select-on robust


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
    data.add_argument("--train-file", help="a .tsv/.csv/.jsonl file to train on instead of the task's")
    data.add_argument("--dev-file", help="a .tsv/.csv/.jsonl file for model selection instead of the task's")
    data.add_argument("--max-train-examples", type=at_least(1), help="train on a random subset of this size (drawn with --seed) (default: all)")
    add_data_flags(data, labels="those of the train file, sorted",
                   max_length="the task's: 64 Rotten Tomatoes and SST-2, 256 IMDB, 80 SNLI, 128 custom")
    method = p.add_argument_group("model and method")
    method.add_argument("--model", default=DEFAULT_MODEL,
                        help="pre-trained encoder: local folder or hub name (paper: bert-base-uncased; default: %(default)s)")
    method.add_argument("--method", default="rift", choices=TRAIN_METHODS,
                        help="standard: CE; adv: CE + beta KL(p(x)||p(x_adv)); rift: adv + alpha InfoNCE; freelb: "
                             "FreeLB's K ascent steps, their gradients accumulated (--freelb-*) (default: %(default)s)")
    method.add_argument("--alpha", type=at_least(0.0, float), default=ALPHA,
                        help="weight of the InfoNCE term I(S;T|Y) (paper: IMDB 0.1, SNLI 0.7; default: %(default)s)")
    method.add_argument("--alpha-ramp-steps", type=at_least(0), default=0,
                        help="raise alpha linearly from 0 over this many steps (0: alpha from step 1, as the "
                             "paper; default: %(default)s)")
    method.add_argument("--beta", type=at_least(0.0, float), default=BETA,
                        help="weight of the adversarial KL term (paper: IMDB 10, SNLI 5; default: %(default)s)")
    method.add_argument("--tau", type=at_least(1e-3, float), default=TAU, help="InfoNCE temperature (paper: 0.2; default: %(default)s)")
    method.add_argument("--feature", default="auto", choices=FEATURES,
                        help="S and T: cls (h_[CLS]), mean (mean of the token states), pooler (tanh(W h_cls), the "
                             "paper's), or auto: the checkpoint's sentence-transformers pooling where it has one, "
                             "else the pooler where it was trained, else cls (default: %(default)s)")
    method.add_argument("--critic-lr", type=positive, default=CRITIC_LR,
                        help="peak AdamW learning rate of the InfoNCE critics, on the same schedule (paper: the "
                             "encoder's; default: %(default)s, results/critic-lr.md)")
    method.add_argument("--adversary", default="pgd", choices=ADVERSARIES,
                        help="pgd: embedding-space PGD (--adv-*); ascc: the paper's, each word a convex combination "
                             "of its counter-fitted synonyms' embeddings (--ascc-*) (default: %(default)s)")
    method.add_argument("--adv-norm", default=PGD_NORM, choices=["l2", "linf"], help="PGD ball, per token (default: %(default)s)")
    method.add_argument("--adv-eps", type=at_least(0.0, float), default=PGD_EPS,
                        help="PGD radius per token in embedding space; all words move at once (default: %(default)s)")
    method.add_argument("--adv-steps", type=at_least(1), default=PGD_STEPS, help="PGD steps per batch (default: %(default)s)")
    method.add_argument("--ascc-steps", type=at_least(1), default=ASCC_STEPS, help="ASCC Adam steps per batch (paper: 10; default: %(default)s)")
    method.add_argument("--ascc-lr", type=at_least(0.0, float), default=ASCC_LR, help="ASCC Adam learning rate (paper: 1; default: %(default)s)")
    method.add_argument("--ascc-entropy", type=at_least(0.0, float), default=ASCC_ENTROPY,
                        help="ASCC: weight of the weights' entropy per word, which keeps them near one synonym "
                             "(paper: 15 / (300 x 128); default: %(default).3g)")
    method.add_argument("--freelb-steps", type=at_least(1), default=FREELB_STEPS,
                        help="FreeLB: ascent steps K per batch, each with a backward pass (default: %(default)s, "
                             "the FreeLB release's SST-2 setting, as the three below)")
    method.add_argument("--freelb-lr", type=at_least(0.0, float), default=FREELB_LR,
                        help="FreeLB: ascent step size along the normalised gradient (default: %(default)s)")
    method.add_argument("--freelb-init-mag", type=at_least(0.0, float), default=FREELB_INIT,
                        help="FreeLB: scale of the random start, uniform / sqrt(tokens x hidden) (default: %(default)s)")
    method.add_argument("--freelb-max-norm", type=at_least(0.0, float), default=FREELB_MAX_NORM,
                        help="FreeLB: bound on the perturbation's L2 norm per example, 0 for none (default: %(default)s)")
    method.add_argument("--synonyms-path", help="ASCC: the neighbour table, JSON word -> neighbours (default: "
                                                "synonyms/counterfitted_neighbors.json under --data-dir, $RIFT_DATA or the cache)")
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=at_least(1e-3, float), default=3.0, help="passes over the training data (default: %(default)s)")
    optim.add_argument("--max-steps", type=at_least(1), help="stop after this many optimiser steps (overrides --epochs)")
    optim.add_argument("--batch-size", type=at_least(1), default=BATCH_SIZE,
                       help="examples per forward pass and process, a multiple of the classes (default: %(default)s)")
    optim.add_argument("--grad-accum", type=at_least(1), default=1, help="forward passes per optimiser step (default: %(default)s)")
    optim.add_argument("--lr", type=positive, default=LR, help="peak AdamW learning rate (paper: 2e-5; default: %(default)s)")
    optim.add_argument("--weight-decay", type=at_least(0.0, float), default=WEIGHT_DECAY,
                       help="AdamW weight decay, on the heads only as in the paper (default: %(default)s)")
    optim.add_argument("--warmup", type=fraction, default=WARMUP,
                       help="share of steps with linear learning-rate warm-up, then linear decay to 0 (default: %(default)s)")
    optim.add_argument("--max-grad-norm", type=at_least(1e-6, float), default=1.0, help="gradient clipping norm (default: %(default)s)")
    bookkeeping = p.add_argument_group("bookkeeping")
    bookkeeping.add_argument("--eval-every", type=at_least(1), help="optimiser steps between dev evaluations (default: once per epoch)")
    bookkeeping.add_argument("--select-on", choices=["clean", "robust", "last"],
                             help="which evaluation's checkpoint best/ keeps: the best clean dev accuracy, the best accuracy "
                                  "on --select-examples dev sentences under the --adversary as an attack (ASCC: its discrete "
                                  "text; PGD: aimed at the true label) (ties: the better clean accuracy), or the last "
                                  "(default: robust for adv and rift, as the paper; clean for standard and freelb, as FreeLB's release)")
    bookkeeping.add_argument("--select-examples", type=at_least(1), default=SELECT_EXAMPLES,
                             help="--select-on robust: dev sentences attacked, the same ones for every run (drawn with "
                                  "seed 0) (default: %(default)s)")
    bookkeeping.add_argument("--log-every", type=at_least(1), default=10, help="optimiser steps between metrics.jsonl lines (default: %(default)s)")
    bookkeeping.add_argument("--log-pulls", action="store_true",
                             help="adv and rift: on each logged step's batch, the L2 norm of each weighted term's "
                                  "gradient on the encoder (pull_ce, pull_kl, pull_mi) and their pairwise cosines "
                                  "(cos_ce_kl, ...) in metrics.jsonl; costs one extra backward pass per term on "
                                  "those steps, about doubling their time (README), the training itself "
                                  "unchanged; not with --compile")
    bookkeeping.add_argument("--save-every", type=at_least(1), default=500,
                             help="optimiser steps between saves of last/, which --resume continues from; also saved at the "
                                  "end and on Ctrl-C (default: %(default)s)")
    bookkeeping.add_argument("--keep-state", action="store_true",
                             help="a finished run keeps last/'s optimiser state (AdamW's moments, twice the model's "
                                  "size); by default it goes at the end, as a finished run is never resumed, and a "
                                  "stopped run always keeps it")
    bookkeeping.add_argument("--seed", type=random_seed, default=SEED, help="seeds python, numpy and torch; draws the subset and the batches (default: %(default)s)")
    bookkeeping.add_argument("--out", help="run folder (default: runs/<task>-<method>-<time>); must not exist yet")
    bookkeeping.add_argument("--device", default="auto", help="cpu, cuda, or auto: cuda when there is one (torchrun: one GPU per process) (default: %(default)s)")
    bookkeeping.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on with CUDA)")
    bookkeeping.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; the first steps are slow)")
    bookkeeping.add_argument("--resume", metavar="RUN",
                             help="continue the run in folder RUN from its last/, with the settings it began with; of "
                                  f"the other flags only {', '.join(FLAGS_RESUME_MAY_CHANGE)} may be given")
    preset = p.parse_known_args(argv)[0].preset
    if preset:
        p.set_defaults(**PRESETS[preset])
    cfg = p.parse_args(argv)
    if cfg.resume:  # parsed again over a namespace of markers: what is still a marker was not given
        defaults, unset = vars(p.parse_args([])), object()
        given = vars(p.parse_args(argv, argparse.Namespace(**dict.fromkeys(defaults, unset))))
        cfg = resumed_settings(cfg.resume, {key: value for key, value in given.items() if value is not unset}, defaults)
    if cfg.log_pulls and cfg.method == "freelb":
        p.error("--log-pulls splits one loss into its terms; freelb's K backward passes have one term: drop --log-pulls")
    if cfg.log_pulls and cfg.compile:  # a compiled backward frees its buffers: no graph kept for a second pass
        p.error("--log-pulls needs the graph kept between backward passes, which --compile does not keep: drop one")
    return cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def setup_distributed(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun each process takes the GPU of its local rank
    (NCCL), or shares the CPU (gloo)."""
    device = pick_device(device_flag)
    return (*process_group("nccl" if device.type == "cuda" else "gloo"), device)


def accuracy(model, tokenizer, examples, max_length: int, amp: bool) -> float:
    probs = predict_proba(model, tokenizer, examples, max_length, batch_size=128, amp=amp)
    return int((probs.argmax(-1) == torch.tensor([ex.label for ex in examples])).sum()) / len(examples)


def robust_accuracy(model, tokenizer, examples, max_length: int, amp: bool, adversary: PGD | ASCC) -> float:
    """Accuracy on dev sentences under the training adversary turned attack (its .attack): ASCC's
    discrete text (the release's selection attack), or PGD aimed at the true label at the training
    radius. Its random draws come from generators of its own, seeded by each sentence's position:
    selecting leaves the training's draws alone, so the rule changes only which checkpoint is kept."""
    with Victim(model, tokenizer, max_length, batch_size=32, amp=amp) as victim:
        records = [result.record() for _, result in adversary.attack(victim, examples, [[0, n] for n in range(len(examples))])]
    return summarize(records)["accuracy_under_attack"]


def evaluate(run: RunFolder, loop: LoopState, model, tokenizer, labels, dev, select_dev, max_length: int, amp: bool,
             adversary, step: int, select_on: str) -> str:
    """The dev evaluation at `step`, logged: the clean accuracy and, where --select-on robust drew
    select_dev, its accuracy under the adversary turned attack. Its checkpoint becomes best/ when it
    is better. Returns the line to print."""
    started = time.perf_counter()
    evaluation = {"step": step, "dev_accuracy": accuracy(model, tokenizer, dev, max_length, amp)}
    if select_dev:
        evaluation["dev_robust_accuracy"] = robust_accuracy(model, tokenizer, select_dev, max_length, amp, adversary)
    loop.dev_accuracy = evaluation["dev_accuracy"]
    if loop.best["step"] == 0 or better(evaluation, loop.best, select_on):
        loop.best = evaluation
        run.save_best(model, tokenizer, labels)
    run.log(evaluation | {"best_step": loop.best["step"], "best_dev_accuracy": loop.best["dev_accuracy"],
                          "eval_seconds": time.perf_counter() - started})
    robust = f", under {type(adversary).__name__} {evaluation['dev_robust_accuracy']:.4f}" if select_dev else ""
    return f"step {step}: dev accuracy {loop.dev_accuracy:.4f}{robust} (best/: step {loop.best['step']})"


def better(evaluation: dict, best: dict, select_on: str) -> bool:
    """Does this evaluation's checkpoint replace best/'s? robust ties go to the better clean accuracy."""
    if select_on == "last":
        return True
    if select_on == "robust":
        key = lambda e: (e["dev_robust_accuracy"], e["dev_accuracy"])
        return key(evaluation) > key(best)
    return evaluation["dev_accuracy"] > best["dev_accuracy"]


def load_task(cfg: argparse.Namespace) -> Task:
    """--task, or for --task custom the task its files and columns describe."""
    if cfg.task != "custom":
        return TASKS[cfg.task]
    if not cfg.train_file or not cfg.dev_file:
        raise UsageError("--task custom needs --train-file and --dev-file")
    labels = tuple(cfg.labels.split(",")) if cfg.labels else infer_labels(cfg.train_file, cfg.label_column)
    return custom_task(cfg.text_column, cfg.label_column, cfg.context_column, labels)


def load_data(cfg: argparse.Namespace, task: Task, ascc: bool, rank: int, world_size: int):
    """(train, dev, synonyms, their source, data files): the examples (a --max-train-examples subset
    drawn with --seed), for ASCC the synonym function, and the path and sha256 of every file read
    (a resumed run must read the same bytes). Rank 0 reads first, downloading into the cache;
    the other processes read the cache after it."""
    if world_size > 1 and rank != 0:
        dist.barrier()
    train = load_split(task, "train", cfg.data_dir, cfg.train_file)
    dev = load_split(task, "dev", cfg.data_dir, cfg.dev_file)
    words, source = synonyms.counterfitted_synonyms(cfg.synonyms_path, cfg.data_dir) if ascc else (None, None)
    files = {"train": split_file(task, "train", cfg.data_dir, cfg.train_file),
             "dev": split_file(task, "dev", cfg.data_dir, cfg.dev_file)} | ({"neighbours": source["path"]} if ascc else {})
    if world_size > 1 and rank == 0:
        dist.barrier()
    if cfg.max_train_examples and cfg.max_train_examples < len(train):
        train = random.Random(cfg.seed).sample(train, cfg.max_train_examples)
    return train, dev, words, source, {role: {"path": str(path), "sha256": file_sha256(path)} for role, path in files.items()}


def schedule(cfg: argparse.Namespace, train_examples: int, world_size: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, steps between dev evaluations)."""
    per_step = cfg.batch_size * cfg.grad_accum * world_size
    steps_per_epoch = train_examples // per_step
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    if total_steps < 1:
        raise UsageError(f"{train_examples} training examples make no full step of {per_step}; lower "
                         "--batch-size or pass --max-steps")
    return steps_per_epoch, total_steps, cfg.eval_every or steps_per_epoch or total_steps


def training_adversary(cfg: argparse.Namespace, neighbours: Neighbours | None) -> PGD | ASCC:
    """--adversary with its settings: what adv and rift train against, and --select-on robust attacks with."""
    if cfg.adversary == "ascc":
        return ASCC(neighbours, cfg.ascc_steps, cfg.ascc_lr, cfg.ascc_entropy)
    return PGD(cfg.adv_eps, cfg.adv_steps, cfg.adv_norm)


def table_coverage(neighbours: Neighbours) -> dict:
    """How much of the vocabulary ASCC can move, for config.json."""
    moves = neighbours.ids[:, 1] >= 0  # (V,): the tokens with a neighbour
    return {"vocabulary_words_with_neighbours": int(moves.sum()),
            "mean_neighbours_of_those": round(float((neighbours.ids[:, 1:] >= 0).sum() / moves.sum().clamp(min=1)), 3)}


def summarise(cfg: argparse.Namespace, run: RunFolder, task: Task, feature: str, select_on: str, train_examples: int,
              total_steps: int, loop: LoopState, params: list[torch.Tensor]) -> dict:
    """summary.json: the run's final numbers, and whether the processes ended in sync."""
    summary = {"run": str(run.path), "task": task.name, "method": cfg.method,
               "adversary": cfg.adversary if cfg.method in ("adv", "rift") else None, "model": cfg.model,
               "feature": feature, "critic_lr": cfg.critic_lr if cfg.method == "rift" else None, "select_on": select_on,
               "train_examples": train_examples, "steps": total_steps, "best_step": loop.best["step"],
               "best_dev_accuracy": loop.best.get("dev_accuracy"),
               "best_dev_robust_accuracy": loop.best.get("dev_robust_accuracy"),
               "final_dev_accuracy": loop.dev_accuracy if run.is_main else None,
               "examples_seen": total_steps * cfg.batch_size * cfg.grad_accum * run.world_size,
               "train_examples_per_s": total_steps * cfg.batch_size * cfg.grad_accum * run.world_size / loop.train_seconds,
               "train_minutes": loop.train_seconds / 60, "world_size": run.world_size}
    if cfg.method == "rift":
        summary["last_mi_bound"] = loop.record["mi_bound"]  # the last logged window's mean
        summary["mi_bound_ceiling"] = math.log(cfg.batch_size // len(task.labels))  # log B: B examples of a class
    if run.world_size > 1:  # every replica must end with the same weights, critics included
        checksum = torch.stack([p.detach().double().sum() for p in params]).sum()
        sums = [torch.zeros_like(checksum) for _ in range(run.world_size)]
        dist.all_gather(sums, checksum)
        summary["replicas_in_sync"] = all(torch.equal(s, sums[0]) for s in sums)
    return summary


def summary_text(summary: dict, adversary: str, wall_minutes: float) -> str:
    """summary.json as labelled lines with their units."""
    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}%"
    seen, drawn = summary["examples_seen"], summary["train_examples"]
    best = f"step {summary['best_step']}, dev accuracy {percent(summary['best_dev_accuracy'])}"
    if summary["best_dev_robust_accuracy"] is not None:
        best += f", under {adversary.upper()} {percent(summary['best_dev_robust_accuracy'])}"
    lines = {"steps": f"{summary['steps']:,}: {seen:,} examples seen, {seen / drawn:.2g} passes over the {drawn:,} "
                      "training examples",
             "training time": f"{summary['train_minutes']:.1f} min, {summary['train_examples_per_s']:.1f} examples/s",
             "wall time": f"{wall_minutes:.1f} min (this leg: loading, dev evaluations and saves included)",
             "best/": best, "last dev accuracy": percent(summary["final_dev_accuracy"])}
    if "last_mi_bound" in summary:
        lines["MI bound"] = (f"{summary['last_mi_bound']:.2f} of log {round(math.exp(summary['mi_bound_ceiling']))} = "
                             f"{summary['mi_bound_ceiling']:.2f} nats (the last logged window; it cannot exceed log B)")
    width = max(map(len, lines))
    return "\n".join(f"  {label.ljust(width)}  {text}" for label, text in lines.items())


def main(cfg: argparse.Namespace) -> dict:
    rank, world_size, device = setup_distributed(cfg.device)
    seed_everything(cfg.seed)
    task = load_task(cfg)
    path = Path(cfg.resume or cfg.out or f"runs/{task.name}-{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}")
    started = time.perf_counter()
    with RunFolder(path, bool(cfg.resume), rank, world_size) as run:  # this run alone writes there
        summary = run_training(cfg, task, run, device)
    if run.is_main:
        print(f"\n{cfg.method} on {task.name}: {run.path} (summary.json)")
        print(summary_text(summary, cfg.adversary, (time.perf_counter() - started) / 60))
    if world_size > 1:
        dist.destroy_process_group()
    return summary


def run_training(cfg: argparse.Namespace, task: Task, run: RunFolder, device: torch.device) -> dict:
    rank, world_size = run.rank, run.world_size
    # bf16 by default on CUDA only, where evaluate.py also takes it on CPUs with native bf16
    # (cli.default_amp): an attack's verdict is re-checked in fp32, the weights training learns are not.
    amp = device.type == "cuda" if cfg.amp is None else cfg.amp

    # ---- data
    max_length = cfg.max_length or task.max_length
    select_on = cfg.select_on or ("robust" if cfg.method in ("adv", "rift") else "clean")  # FreeLB's release: clean
    attacked = cfg.method in ("adv", "rift") or select_on == "robust"  # the adversary trains or selects
    ascc = attacked and cfg.adversary == "ascc"  # the neighbour table is needed
    train, dev, neighbour_words, synonym_source, data_files = load_data(cfg, task, ascc, rank, world_size)
    num_classes = len(task.labels)
    if cfg.method == "rift" and cfg.batch_size < 2 * num_classes:
        raise UsageError(f"rift needs --batch-size >= {2 * num_classes}: two examples of each class, for InfoNCE")
    batches = balanced_batches([ex.label for ex in train], num_classes, cfg.batch_size, cfg.seed, rank, world_size)
    steps_per_epoch, total_steps, eval_every = schedule(cfg, len(train), world_size)
    # The robust selection attacks the same dev sentences in every run, whatever its --seed.
    select_dev = [dev[i] for i in sample_examples(dev, cfg.select_examples, 0, min_words=0)] if select_on == "robust" else []
    resolved = {"labels": task.labels, "max_length": max_length, "model_path": model_path(cfg.model),
                "train_examples": len(train), "dev_examples": len(dev), "total_steps": total_steps,
                "steps_per_epoch": steps_per_epoch, "amp": amp, "task_source": task.source, "select_on": select_on,
                "select_attack": (cfg.adversary if select_on == "robust" else None), "select_examples": len(select_dev),
                "data_files": data_files}
    if cfg.resume:
        run.check_resumable(resolved, device, cfg.save_every)

    # ---- models: the student, and for RIFT the frozen teacher and the critics
    model, tokenizer = load_classifier(cfg.model, num_labels=num_classes)
    if max_length > model.config.max_position_embeddings:
        raise UsageError(f"--max-length {max_length} exceeds the model's {model.config.max_position_embeddings} positions")
    feature = resolve_feature(cfg.feature, model, model_path(cfg.model))
    resolved["feature"] = feature  # S and T, and the CKA the studies measure
    neighbours = neighbour_table(tokenizer, neighbour_words).to(device) if ascc else None
    if neighbours is not None:
        resolved["ascc"] = synonym_source | table_coverage(neighbours)
    adversary = training_adversary(cfg, neighbours) if attacked else None
    freelb = (FreeLB(cfg.freelb_steps, cfg.freelb_lr, cfg.freelb_init_mag, cfg.freelb_max_norm)
              if cfg.method == "freelb" else None)
    teacher = make_teacher(model).to(device) if cfg.method == "rift" else None  # copied before fine-tuning starts
    critics = Critics(num_classes, model.config.hidden_size, teacher.config.hidden_size).to(device) if teacher else None
    model.to(device)
    optimizer, scheduler = build_optimizer(model, critics, total_steps, lr=cfg.lr, critic_lr=cfg.critic_lr,
                                           weight_decay=cfg.weight_decay, warmup=cfg.warmup)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # encoder, heads, critics
    encoder_params = [p for p in model.base_model.parameters() if p.requires_grad]  # --log-pulls: the terms' pull
    # Resuming, every process loads last/ into what it just built (the teacher stays the pre-trained copy).
    progress = load_training_state(run.path / "last", model, critics, optimizer, scheduler) if cfg.resume else None
    bare, model = model, distribute(model, critics, device, world_size, cfg.compile)
    run.begin(vars(cfg), resolved, progress, lambda: environment(device))

    # ---- the training loop
    loop = restored_loop(progress, batches, cfg.grad_accum, rank, device) if progress else LoopState()
    loss_settings = dict(teacher=teacher, critics=critics, alpha=cfg.alpha, beta=cfg.beta, tau=cfg.tau, feature=feature)
    clock = TrainingClock(loop.train_seconds, device)
    model.train()
    bar = tqdm(range(run.saved_step + 1, total_steps + 1), initial=run.saved_step, total=total_steps,
               desc=f"{cfg.method} {task.name}", disable=not run.is_main, dynamic_ncols=True)
    with stop_on_signals() as stop:
        for step in bar:
            loss_settings["alpha"] = ramped_alpha(cfg.alpha, step, cfg.alpha_ramp_steps)
            logged_step = step % cfg.log_every == 0 or step == total_steps
            for micro in range(cfg.grad_accum):
                batch = tokenize(tokenizer, [train[i] for i in next(batches)], max_length).to(device)
                last_micro = micro == cfg.grad_accum - 1
                with (model.no_sync() if world_size > 1 and not last_micro else nullcontext()), \
                        torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    if freelb:  # its K backward passes run in there, their gradients adding up
                        terms = freelb.backward(model, batch, scale=1 / cfg.grad_accum)
                    else:
                        weighted, terms = loss_terms(cfg.method, model, batch, adversary, **loss_settings)
                        terms = {"loss": sum(weighted.values())} | terms
                if cfg.log_pulls and logged_step and last_micro:
                    # Gradients of this process's batch alone: autograd.grad runs none of DDP's
                    # reducer hooks, which the backward below runs as always.
                    pulls = term_pulls(weighted, encoder_params)
                if not freelb:
                    (terms["loss"] / cfg.grad_accum).backward()
                for name, value in terms.items():  # summed as tensors: no .item() until a log line
                    loop.window[name] = loop.window.get(name, 0.0) + value.detach() / cfg.grad_accum
            if critics and world_size > 1:
                average_gradients(critics, world_size)
            loop.window["grad_norm"] = loop.window.get("grad_norm", 0.0) + torch.nn.utils.clip_grad_norm_(
                params, cfg.max_grad_norm)
            stop_now = check_finite(loop.window, step, bool(stop), run.saved_step, loop.best["step"], device, world_size)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loop.steps_in_window += 1

            if logged_step:
                loop.close_window()  # its .item() waits for the device
                loop.train_seconds = clock.seconds()
                examples_per_s = step * cfg.batch_size * cfg.grad_accum * world_size / loop.train_seconds
                run.log({"step": step, "epoch": round(step / max(steps_per_epoch, 1), 3), "lr": scheduler.get_last_lr()[0],
                         **({"alpha": loss_settings["alpha"]} if cfg.method == "rift" else {}),
                         **loop.record, **(pulls if cfg.log_pulls else {}), "examples_per_s": examples_per_s,
                         "elapsed_s": loop.train_seconds})
                bar.set_postfix(loss=f"{loop.record['loss']:.3f}", ex_s=f"{examples_per_s:.1f}")
            if step % eval_every == 0 or step == total_steps:
                with clock.paused():
                    if run.is_main:
                        bar.write(evaluate(run, loop, bare, tokenizer, task.labels, dev, select_dev, max_length, amp,
                                           adversary, step, select_on))
                    run.barrier()
            if step % cfg.save_every == 0 or step == total_steps or stop_now:
                with clock.paused() as train_seconds:
                    run.save_last(loop.progress(step, train_seconds), bare, tokenizer, task.labels, critics,
                                  optimizer, scheduler, device)
            if stop_now:
                bar.close()
                exit_stopped(run, step, total_steps, stop)

    summary = summarise(cfg, run, task, feature, select_on, len(train), total_steps, loop, params)
    run.finish(summary, cfg.keep_state)
    return summary


if __name__ == "__main__":
    run_command(lambda: main(parse_args()))
