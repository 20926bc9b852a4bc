"""Where training and inference run: accelerate's process state, the Accelerator and its mixed precision.

The loop, `soft-targets`, evaluation and the recipes all get their device and autocast from here, so a
multi-process launch (torchrun / accelerate launch, on GPUs or on CPUs through gloo) is set up one way.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs

from multidistill.config import TrainConfig
from multidistill.errors import ConfigError


def cpu_name() -> str:
    """The CPU's model name as lscpu prints it (Linux's /proc/cpuinfo), else what `platform` knows ("x86_64")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels here (AVX512-BF16 or AMX); without them bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_processes() -> bool:
    """Launched by torchrun / accelerate launch on a machine without GPUs: accelerate sets up its gloo
    process group only when told the run is on the CPU."""
    return _launched_processes() > 1 and not torch.cuda.is_available()


def _launched_processes() -> int:
    """How many processes the launcher started (torchrun / accelerate launch set WORLD_SIZE; 1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def refuse_several_processes(command: str) -> None:
    """Recipes and the demo run their stages in one process: their records, transfer sets and prototypes are
    written by one writer. Under torchrun / accelerate launch every process would claim the run folder."""
    world = _launched_processes()
    if world > 1:
        raise ConfigError(f"`multidistill {command}` runs its stages in one process, and this launch started {world} "
                          "(WORLD_SIZE); start it without torchrun / accelerate launch (it uses one GPU when there "
                          "is one), or train on several processes with the single-stage commands (train-teacher, "
                          "distill, soft-targets)")


def refuse_sharded_launch() -> None:
    """FSDP and DeepSpeed shard the parameters across processes, and the loop saves, evaluates and checkpoints the
    unwrapped model as one whole: under either it would save shards as if they were the model. Refused before
    anything is written (DDP, which keeps a whole copy per process, is the supported launch)."""
    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(variable, "false").lower() == "true":
            raise ConfigError(f"this launch asks for {name} ({variable}=true), which multidistill does not support: "
                              "its parameters are sharded across processes and the model would be saved in parts; "
                              "launch with DDP (e.g. configs/accelerate/multi_gpu.yaml) or torchrun")


def process_state() -> PartialState:
    """This process's place in a (possibly multi-process) run."""
    return PartialState(cpu=True) if _cpu_processes() else PartialState()


def accelerator_for(precision: str) -> Accelerator:
    """An Accelerator with this mixed precision ('no', 'bf16', 'fp16').

    accelerate keeps one process-wide state and refuses a second Accelerator with another precision,
    so a process that trains in bf16 and then evaluates in fp32 resets the precision part of it
    (the distributed part, PartialState, is kept).
    """
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    # Each step trains one task's head; under DDP the other heads get no gradient on that step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(mixed_precision=precision, kwargs_handlers=[ddp], cpu=_cpu_processes())


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator of a training run: ``train.bf16`` / ``train.fp16``; warns when bf16 would be emulated."""
    if config.fp16 and not config.bf16:
        return accelerator_for("fp16")
    return bf16_accelerator(config.bf16, "train.bf16", "train.bf16=false")


def bf16_accelerator(bf16: bool, setting: str, instead: str) -> Accelerator:
    """The Accelerator for bf16 autocast (``bf16``) or fp32; with bf16 on a CPU without native bf16 kernels, after a
    warning naming ``setting`` and ``instead``, the way back to fp32."""
    accelerator = accelerator_for("bf16" if bf16 else "no")
    if bf16 and accelerator.device.type == "cpu" and not cpu_has_fast_bf16():
        # Measured on an AVX2-only EPYC: bf16 autocast made a MiniLM train step ~20x slower (docs/benchmarks.md).
        warnings.warn(f"{setting} is on but this CPU has no native bf16 (AVX512-BF16/AMX): bf16 autocast will be "
                      f"much slower than fp32 here; consider {instead}", stacklevel=3)
    return accelerator
