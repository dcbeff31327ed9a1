"""A training run's processes. Under torchrun they train one model: the student in DDP, the critics
averaged beside it. A signal stops them all after the same step, last/ saved; a loss no longer
finite stops them all before that step's update."""

import math
import signal
import sys
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from checkpoints import RunFolder
from data import UsageError
from rift import Critics


def average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """The critics live outside DDP: their gradients are averaged over the processes here."""
    for p in module.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world_size


def distribute(model, critics: Critics | None, device: torch.device, world_size: int, compile: bool):
    """The model as the loop runs it: across processes in DDP (the critics, outside it, start from
    rank 0's weights too), and compiled with --compile."""
    if world_size > 1:
        # The encoder's buffers (position ids) never change: no need to broadcast them every forward.
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
        for p in critics.parameters() if critics else []:  # DDP aligned the student; align the critics
            dist.broadcast(p.data, 0)
    if compile:
        model = torch.compile(model, dynamic=True)
    return model


@contextmanager
def stop_on_signals():
    """Inside the block Ctrl-C or SIGTERM asks the run to stop, into the list it yields: the run
    finishes its step, saves last/ and exits. A second Ctrl-C stops at once."""
    stop = []

    def stop_after_this_step(signum, frame):
        stop.append(signum)
        signal.signal(signum, previous_handlers[signum])

    previous_handlers = {signum: signal.signal(signum, stop_after_this_step)
                         for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def check_finite(window: dict, step: int, stop_asked: bool, saved_step: int, best_step: int,
                 device: torch.device, world_size: int) -> bool:
    """Before the update: is every term of the window (finite until this step) still finite, and
    has a signal asked to stop (the answer: stop after this step)? All processes agree, so all stop
    at the same step. Reading the answer waits for the device once a step; the next batch's blocking
    copy to the device waits for it anyway, so this costs about the launch of the optimiser step.
    Checking only at log time would let non-finite weights reach last/ and could not name the step."""
    flags = torch.stack([~torch.stack([torch.isfinite(value) for value in window.values()]).all(),
                         torch.tensor(stop_asked, device=device)]).int()
    if world_size > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    not_finite, stop_now = flags.tolist()
    if not_finite:
        values = {name: value.item() for name, value in window.items()}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        term = next((name for name in bad if name != "loss"), bad[0] if bad else None)
        what = f"the {term} term is {values[term]}" if term else "the loss of another process is not finite"
        kept = ([f"last/ holds step {saved_step}"] if saved_step else []) + (
            [f"best/ step {best_step}"] if best_step else [])
        kept = f" ({', '.join(kept)})" if kept else ""
        raise UsageError(f"step {step}: {what}; training stopped before this step's update{kept}: "
                         "lower --lr, --beta or --adv-eps, or check the data")
    return bool(stop_now)


def exit_stopped(run: RunFolder, step: int, total_steps: int, stop: list) -> None:
    """Exit a stopped run, last/ saved, with its signal's status (Ctrl-C's where the others stopped)."""
    if run.is_main:
        print(f"stopped at step {step} of {total_steps}; last/ is saved: continue with {run.resume_command()}",
              file=sys.stderr)
    if run.world_size > 1:
        dist.destroy_process_group()
    sys.exit(128 + (stop[0] if stop else signal.SIGINT))
