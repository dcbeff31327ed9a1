"""Checkpoints. best/ is a standard Hugging Face model folder (config with the label names,
safetensors, tokenizer) that AutoModelForSequenceClassification loads. last/ is one too, plus all a
resumed run needs to end as if it had never stopped: the critics and AdamW moments as safetensors,
everything else (optimiser groups, schedule, step, best dev accuracy, open metrics window, every
process's random states) as JSON. Nothing is pickled, so a checkpoint from anywhere is safe to load.
"""

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data import UsageError, read_text
from rift import load_classifier

STATE = "training_state"  # last/training_state.safetensors (critics, optimiser) and .json (the rest)


def save_model(model, tokenizer, folder: Path, labels: tuple[str, ...]) -> None:
    """A standard Hugging Face folder: config (with the label names), safetensors, tokenizer."""
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def save_training_state(folder: Path, model, tokenizer, labels: tuple[str, ...], critics, optimizer, scheduler,
                        progress: dict) -> None:
    """last/: the model as a Hugging Face folder and, beside it, the other tensors (critics, AdamW
    moments) as safetensors and everything else as JSON: the optimiser's groups, the schedule and
    `progress` (the step, which fixes the sampler's position, the best dev accuracy so far, the open
    metrics window, every process's random states). Nothing is pickled."""
    save_model(model, tokenizer, folder, labels)
    optim = optimizer.state_dict()
    tensors = {f"critics.{key}": value for key, value in (critics.state_dict() if critics else {}).items()}
    tensors |= {f"optimizer.{index}.{name}": value for index, state in optim["state"].items()
                for name, value in state.items()}
    save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()},
              folder / f"{STATE}.safetensors")
    (folder / f"{STATE}.json").write_text(json.dumps(
        progress | {"optimizer_groups": optim["param_groups"], "scheduler": scheduler.state_dict()}))


def load_training_state(folder: Path, model, critics, optimizer, scheduler) -> dict:
    """Put last/'s weights and state into the freshly built run; returns its `progress`."""
    try:
        progress = json.loads(read_text(folder / f"{STATE}.json"))
        tensors = load_file(folder / f"{STATE}.safetensors")
        model.load_state_dict(load_classifier(str(folder))[0].state_dict())
        if critics:
            critics.load_state_dict({key.removeprefix("critics."): value for key, value in tensors.items()
                                     if key.startswith("critics.")})
        state = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": progress["optimizer_groups"]})
        scheduler.load_state_dict(progress["scheduler"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UsageError(f"{folder} is not a whole training state ({reason}); a run cannot resume from it") from None
    return progress


def gathered_random_states(device: torch.device, world_size: int) -> list[dict]:
    """Every process's random states, for rank 0 to save: each process draws its own dropout."""
    if world_size == 1:
        return [random_states(device)]
    every = [None] * world_size
    dist.all_gather_object(every, random_states(device))
    return every


def random_states(device: torch.device) -> dict:
    """Python's, NumPy's and torch's generators (the device's too): dropout and the PGD start draw on them."""
    numpy_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "torch": torch.get_rng_state().tolist(),
            "cuda": torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None}


def set_random_states(states: dict, device: torch.device) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if device.type == "cuda":
        torch.cuda.set_rng_state(torch.tensor(states["cuda"], dtype=torch.uint8), device)
