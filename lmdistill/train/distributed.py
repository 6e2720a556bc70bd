"""Sharded training on CPU processes.

accelerate turns FSDP on only for accelerator devices (CUDA, XPU, ...): CPU processes started by ``accelerate launch``
with an FSDP config (which exports ``ACCELERATE_USE_FSDP=true`` and the ``FSDP_*`` settings) fall back to plain data
parallelism without a word. torch's ``fully_shard`` itself runs on CPU with gloo, so :func:`shard_on_cpu_if_configured`
switches accelerate's state to FSDP there: the same accelerate config then shards on CPU (tests, debugging, CPU
clusters) as on GPUs, and ``prepare``, ``save_state``/``load_state`` and ``get_state_dict`` take their FSDP paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.fsdp import FSDPModule

from lmdistill.errors import UserError

log = logging.getLogger(__name__)


def fsdp_configured() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with ``distributed_type: FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_sharding_supports(accelerator: Accelerator, *, samples_in_training: bool, samples_in_eval: bool) -> None:
    """Refuse what a sharded student cannot do: sampling (``generate``) runs a different number of forwards on each
    process, and every FSDP forward is a collective all processes must join."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return
    if samples_in_training:
        raise UserError("on_policy sampling does not run with an FSDP-sharded student (each process would generate a "
                        "different number of tokens); train it with data parallelism (torchrun) or drop on_policy")
    if samples_in_eval:
        raise UserError("train.eval_samples does not run with an FSDP-sharded student; set train.eval_samples: 0 and "
                        "score samples afterwards with lmdistill eval --sample-prompts")


def allow_precision(precision: str) -> None:
    """accelerate keeps one state per process and refuses a second Accelerator with another mixed precision ("restart
    your runtime"); a run in a process that already trained with another precision (a notebook, a script comparing
    precisions) starts from a fresh accelerator state instead. The process group (PartialState) is kept."""
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        log.info("accelerator state reset: this process trained in %s before, this run uses %s",
                 state.get("_mixed_precision"), precision)
        AcceleratorState._reset_state()


def shard_on_cpu_if_configured(accelerator: Accelerator) -> None:
    """On CPU processes launched with an FSDP config, make accelerate shard as it would on GPUs."""
    if not fsdp_configured() or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # its settings come from the FSDP_* variables the launcher exported
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # accelerate keeps the type in both states
    log.info("FSDP%d on %d CPU processes (gloo)", plugin.fsdp_version, accelerator.num_processes)


@contextlib.contextmanager
def unsharded_root(model: torch.nn.Module) -> Iterator[None]:
    """Within: the root FSDP2 module's own parameters (embeddings, final norm, lm_head, projections) are whole, so the
    student can be called directly (held-out evaluation, ``generate``); its layers gather theirs in their own hooks.
    A no-op for a model that is not FSDP2-sharded."""
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
