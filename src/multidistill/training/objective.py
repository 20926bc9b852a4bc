"""An objective: a weighted sum of registered loss terms, per task.

The loop calls ``objective(model, batch)`` and never knows which terms are in play. Each loss term
names the tensors it reads (``inputs``: student_logits, labels, task, teacher_mean, teacher_logits);
the objective gathers them from the model output and the batch. An objective is an `nn.Module`, so
terms with parameters (projections) are trained and checkpointed with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from multidistill.config import ObjectiveConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.losses import LOSSES, build_loss

# What a loss reads when it needs a head (logits) or labels: a text task has neither.
HEAD_INPUTS = ("student_logits", "labels", "teacher_mean", "teacher_logits")


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


def refuse_head_losses(tasks: dict[str, Task], config: ObjectiveConfig) -> None:
    """Refuse, before training, a text task (no labels, no head) given a loss that reads logits or labels."""
    for name, task in tasks.items():
        if task.has_head:
            continue
        for term in config.terms_for(task):
            reads = [key for key in getattr(LOSSES.get(term.loss), "inputs", ()) if key in HEAD_INPUTS]
            if reads:
                raise ConfigError(f"task '{name}' is a text task (unlabelled text: no labels, no head), but loss "
                                  f"'{term.loss}' reads {', '.join(reads)}; give it feature losses only, under "
                                  f"key 'objective.tasks.{name}' (e.g. relation_kl or hidden_mse)")


class WeightedObjective(nn.Module):
    """sum_k w_k * mean_i(weight_i * loss_k(example i)) with the terms configured for the batch's task."""

    def __init__(self, tasks: dict[str, Task], config: ObjectiveConfig | None = None) -> None:
        super().__init__()
        config = config or ObjectiveConfig()
        unknown = sorted(set(config.tasks) - set(tasks))
        if unknown:
            raise ConfigError(f"key 'objective.tasks': {unknown} are not tasks of this run ({sorted(tasks)})")
        refuse_head_losses(tasks, config)
        self.tasks = tasks
        self.schedules = {name: [(term.weight, term.weight if term.weight_end is None else term.weight_end)
                                 for term in config.terms_for(task)] for name, task in tasks.items()}
        self.progress = 0.0
        self.terms = nn.ModuleDict({
            name: nn.ModuleList([build_loss(term.loss, **term.params) for term in config.terms_for(task)])
            for name, task in tasks.items()
        })

    def set_progress(self, fraction: float) -> None:
        """Move scheduled weights and temperatures to ``fraction`` (0..1) of training; the loop calls this
        before every step with step / total_steps, so a resumed run follows the same schedule."""
        self.progress = min(max(fraction, 0.0), 1.0)
        for terms in self.terms.values():
            for term in terms:
                if hasattr(term, "set_progress"):
                    term.set_progress(self.progress)

    def weight(self, task: str, index: int) -> float:
        start, end = self.schedules[task][index]
        return start + (end - start) * self.progress

    @property
    def needs_teacher(self) -> bool:
        return any(name.startswith("teacher") for terms in self.terms.values() for t in terms for name in t.inputs)

    def forward(self, model: nn.Module, batch: dict) -> ObjectiveOutput:
        task = self.tasks[batch["task"]]
        outputs = model(task=task.name, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch.get("token_type_ids"))
        teacher_logits = batch.get("teacher_logits")
        named = {"student_logits": outputs.logits, "labels": batch["labels"], "task": task,
                 "teacher_mean": batch.get("teacher_mean"),
                 # K teachers' logits (B, K, C) -> their mean, the target of logit-matching terms.
                 "teacher_logits": teacher_logits.mean(1) if teacher_logits is not None else None}
        example_weights = batch.get("weights")
        total = outputs.logits.new_zeros((), dtype=torch.float32)
        logs = {}
        for index, term in enumerate(self.terms[task.name]):
            weight = self.weight(task.name, index)
            missing = [name for name in term.inputs if named[name] is None]
            if missing:
                raise ConfigError(f"loss '{term.loss_name}' for task '{task.name}' needs {missing}: "
                                  "give the run a teacher-signal store")
            per_example = term(*(named[name] for name in term.inputs))
            if example_weights is not None:
                per_example = per_example * example_weights
            value = per_example.mean()
            total = total + weight * value
            logs[term.loss_name] = float(value.detach())
        return ObjectiveOutput(loss=total, terms=logs)
