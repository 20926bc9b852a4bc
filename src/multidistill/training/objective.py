"""An objective: a weighted sum of registered loss terms, per task.

The loop calls ``objective(model, batch)`` and never knows which terms are in play. Each loss term
names the tensors it reads (``inputs``: student_logits, labels, task, teacher_mean, teacher_logits,
student_features, teacher_features, domain_ids, example_ids); the objective gathers them from the model output and
the batch (``domain_ids``, and ``ids`` as ``example_ids``). An
objective is an `nn.Module`, so terms with parameters (projections) are trained and checkpointed with the model.

Feature terms are built with the models' sizes (``dims``). When a task's terms read features, the student's
forward is asked for exactly the features they declare (``model(..., want=...)``, one forward, inside DDP's);
the teacher's come in the batch as ``teacher_features`` (from online teachers or a store), one `EncoderFeatures`
or a list of K (one per teacher), in which case each term's per-example loss is the mean of its K per-teacher
losses (features are never averaged: a mean of relation or attention maps is not one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from multidistill.config import LossTerm, ObjectiveConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.losses import build_loss
from multidistill.losses.registry import LOSSES, check_task_type
from multidistill.models.features import DOMAIN_FEATURES, ModelDims
from multidistill.teachers.reduce import mean_teacher_logits

# What a loss reads when it needs a head (logits) or labels: a text task has neither.
HEAD_INPUTS = ("student_logits", "labels", "teacher_mean", "teacher_logits")
TEACHER_LOGIT_INPUTS = frozenset({"teacher_mean", "teacher_logits"})
# What to do when a term's input is missing from the batch.
_HOW_TO_GET = {"teacher_features": "give the run online teachers (key 'online_teachers'), which compute the "
                                   "teacher's features on each batch, or a store that holds its hidden states "
                                   "(key 'signals')",
               "labels": "this task has no labels; use terms that need none",
               "domain_ids": "this task's batches carry no domain ids: give the task domains (Task.domains)",
               "example_ids": "build batches with `collate`, which gives each batch its example ids ('ids')"}


def reads_inputs(config: ObjectiveConfig, tasks: Mapping[str, Task], names: frozenset[str]) -> bool:
    """Whether any configured term of ``tasks`` reads one of ``names`` (checked before anything is built)."""
    config = config or ObjectiveConfig()
    return any(set(getattr(LOSSES.get(term.loss), "inputs", ())) & names
               for task in tasks.values() for term in config.terms_for(task))


def term_reads_domain_branch(term: LossTerm) -> bool:
    """Whether ``term`` reads the model's own domain branch (a student-side `DOMAIN_FEATURES` output, as Meta-KD's
    domain_adversarial and transferable_mse do)."""
    return bool(set(getattr(LOSSES.get(term.loss), "student_features", ())) & set(DOMAIN_FEATURES))


def reads_domain_branch(config: ObjectiveConfig | None, task_names: Iterable[str]) -> bool:
    """Whether a term that ``config`` gives one of ``task_names`` reads the model's own domain branch
    (`term_reads_domain_branch`): without one, a model built with `model.domain_branch` saves a branch that nothing
    trained. Checked with the config, where task types are not known yet, so a task without terms of its own counts
    every type list."""
    config = config or ObjectiveConfig()
    for name in task_names:
        terms = config.tasks.get(name) or [*config.classification, *config.multilabel, *config.regression]
        if any(term_reads_domain_branch(term) for term in terms):
            return True
    return False


def check_domain_branch(config: ObjectiveConfig | None, tasks: Iterable[Task], domains: Sequence[str] | None,
                        key: str = "model.domain_branch.domains", architecture: str = "hf") -> None:
    """Refuse, before training, terms that read the model's domain branch on a task when the model has none
    (``domains`` None), or has one over other domains than the task's `Task.domains` (``key`` names them). A batch's
    domain id k is its task's k-th domain and indexes the branch's embedding and classifier; the first batch only
    checked the ids' range, so a branch over more, fewer or other names trained with ids that meant other domains.
    A BiLSTM (``architecture``) cannot have a branch, so its refusal does not advise adding one."""
    config = config or ObjectiveConfig()
    for task in tasks:
        losses = sorted({term.loss for term in config.terms_for(task) if term_reads_domain_branch(term)})
        if not losses:
            continue
        reads = f"{', '.join(losses)} on task '{task.name}' read{'s' * (len(losses) == 1)} the model's domain branch"
        if not task.domains:
            raise ConfigError(f"key 'objective': {reads} with the batches' domain ids, but the task has no domains "
                              "(Task.domains); drop those terms, or give the task domains (domain_files, or a mapped "
                              "columns.domain)")
        if domains is None and architecture == "bilstm":
            raise ConfigError(f"key 'objective': {reads}, which a BiLSTM model cannot have (model.domain_branch "
                              "needs architecture: hf); drop those terms, or train a Transformer model")
        if domains is None:
            raise ConfigError(f"key 'objective': {reads}, which the model does not have; add model.domain_branch "
                              f"over the task's domains ({{domains: {list(task.domains)}}}), or drop those terms")
        check_branch_domains(domains, task, key, f"{reads}, which is over ")


def check_branch_domains(domains: Sequence[str], task: Task, key: str, subject: str = "",
                         advice: str = "") -> None:
    """Refuse, by ``key``, a domain branch over other ``domains`` than ``task``'s `Task.domains`, in their order:
    a batch's domain id k is the task's k-th domain and indexes the branch's embedding and classifier."""
    if list(domains) != list(task.domains):
        raise ConfigError(f"key '{key}': {subject}{list(domains)}, but the task's domains are "
                          f"{list(task.domains)}; a batch's domain id k is the task's k-th domain, so the branch "
                          f"must be over exactly those, in that order{advice}")


def objective_for_tasks(config: ObjectiveConfig | None, tasks: Iterable[str], run_tasks: Iterable[str],
                        key: str = "objective") -> ObjectiveConfig | None:
    """``config`` for a stage that trains on ``tasks`` alone, some of a recipe's ``run_tasks`` (MKD's finetune-<task>
    and baseline-<task>, MITKD's fine-tunes): its per-task terms (`objective.tasks`) of the other run tasks dropped,
    the type lists kept. The stage's own check (`WeightedObjective`: an entry that is no task of the run is refused)
    then holds, where the whole objective was refused by the first one-task stage.

    An entry that names none of ``run_tasks`` is a ConfigError under ``key`` (the recipe's key of the objective):
    dropped, it would never be used. With no entry to drop, ``config`` itself comes back, so a stage's settings (and
    fingerprint) stay what they were; None stays None."""
    if config is None:
        return None
    tasks, run_tasks = set(tasks), list(run_tasks)
    unknown = sorted(set(config.tasks) - set(run_tasks))
    if unknown:
        raise ConfigError(f"key '{key}.tasks': {unknown} are not tasks of this run ({sorted(run_tasks)})")
    if not tasks <= set(run_tasks):
        raise ValueError(f"tasks {sorted(tasks - set(run_tasks))} are not among the run's {run_tasks}")
    if set(config.tasks) <= tasks:
        return config
    return config.model_copy(update={"tasks": {name: terms for name, terms in config.tasks.items() if name in tasks}})


def tasks_reading_labels(config: ObjectiveConfig | None, tasks: Iterable[Task]) -> list[str]:
    """The names of ``tasks`` whose configured terms read gold labels: their training rows must hold some
    (`data.prepare.prepare_data`'s ``labelled_train``), or such a term would be 0 at every step."""
    config = config or ObjectiveConfig()
    return [task.name for task in tasks if task.has_head
            and any("labels" in getattr(LOSSES.get(term.loss), "inputs", ()) for term in config.terms_for(task))]


# What to set for a type list left out, as the two logit recipes' objectives do (`mtdnn_kd_objective`, `mkd_objective`).
_DISTILLING_TERMS = {
    "classification": "MT-DNN-KD: [{loss: hard, weight: 0.5}, {loss: soft_ce, weight: 0.5}]; MKD: [{loss: logit_mse}, "
                      "{loss: hard}]",
    "multilabel": "MT-DNN-KD: [{loss: hard, weight: 0.5}, {loss: soft_bce, weight: 0.5}]; MKD: [{loss: logit_mse}, "
                  "{loss: hard}]",
    "regression": "MT-DNN-KD: [{loss: hard}, {loss: score_mse}]; MKD: [{loss: logit_mse}, {loss: hard}]",
}


def refuse_unset_type_terms(config: ObjectiveConfig | None, tasks: Iterable[Task],
                            key: str = "key 'objective'") -> None:
    """Refuse an objective whose terms for one task type distil from teachers but that leaves another type's list
    out, for a run with a task of that type (and no per-task terms of its own): the task would silently train on the
    default, gold labels alone, though the objective asks for distillation (a `classification` list of soft targets
    beside STS-B, or beside a multilabel task). An objective of gold labels only (a teacher's, a fine-tune's) is
    fine: the default is what it asks for."""
    if config is None:
        return
    tasks = list(tasks)
    # The tasks each type list trains: those of its type without terms of their own (an empty own list falls back
    # to the type's, as `terms_for` does).
    trained = {kind: [task.name for task in tasks if task.type == kind and not config.tasks.get(task.name)]
               for kind in _DISTILLING_TERMS}
    # A list that reads the teachers says distillation is wanted, even where this run has no task of its type (a
    # shared objective, or a run of multilabel tasks alone given a classification list): then nothing would distil.
    distilling = [kind for kind in _DISTILLING_TERMS if kind in config.model_fields_set
                  and any(name.startswith("teacher") for term in getattr(config, kind)
                          for name in getattr(LOSSES.get(term.loss), "inputs", ()))]
    if not distilling:
        return
    for kind, terms in _DISTILLING_TERMS.items():
        if kind in config.model_fields_set:
            continue
        unset = trained[kind]
        if unset:
            raise ConfigError(f"{key}: task(s) {unset} are {kind}, and its {kind} terms are not set, so they would "
                              "train on gold labels alone (the default, [hard]) while the objective's "
                              f"{' and '.join(distilling)} terms read the teachers; set {kind} beside them ({terms}) "
                              "or give those tasks terms of their own under tasks")


def unused_type_lists(tasks: Iterable[Task]) -> tuple[str, ...]:
    """The objective's type lists no task of a run reads: ``multilabel`` without a multilabel task. Stage
    fingerprints and checkpoint settings leave them out, so runs made before the list existed keep theirs."""
    return () if any(task.is_multilabel for task in tasks) else ("multilabel",)


def check_terms_fit(config: ObjectiveConfig | None, tasks: Iterable[Task], key: str = "objective") -> None:
    """Refuse, by ``key``, per-task terms of a type their task is not (the type lists were checked with the config)
    and an objective that leaves a task type on gold labels alone while others distil (`refuse_unset_type_terms`)."""
    config = config or ObjectiveConfig()
    tasks = list(tasks)
    for task in tasks:
        for i, term in enumerate(config.tasks.get(task.name, [])):
            check_task_type(term.loss, task.type, f"key '{key}.tasks.{task.name}.{i}'")
    refuse_unset_type_terms(config, tasks, key=f"key '{key}'")


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


def refuse_head_losses(tasks: dict[str, Task], config: ObjectiveConfig, key: str | None = None) -> None:
    """Refuse, before training, a text task (no labels, no head) given a loss that reads logits or labels;
    ``key`` names the config key of its terms (default `objective.tasks.<task>`)."""
    for name, task in tasks.items():
        if task.has_head:
            continue
        for term in config.terms_for(task):
            reads = [key for key in getattr(LOSSES.get(term.loss), "inputs", ()) if key in HEAD_INPUTS]
            if reads:
                raise ConfigError(f"task '{name}' is a text task (unlabelled text: no labels, no head), but loss "
                                  f"'{term.loss}' reads {', '.join(reads)}; give it feature losses only, under "
                                  f"key '{key or f'objective.tasks.{name}'}' (e.g. relation_kl or hidden_mse)")


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast disabled on ``device``'s type (a no-op where that type has no autocast)."""
    available = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4; earlier: the usual types
    if available(device.type) if available is not None else device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class WeightedObjective(nn.Module):
    """sum_k w_k * mean_i(weight_i * loss_k(example i)) with the terms configured for the batch's task."""

    def __init__(self, tasks: dict[str, Task], config: ObjectiveConfig | None = None,
                 dims: Mapping[str, ModelDims] | None = None) -> None:
        """``dims`` ({"student": ModelDims, "teacher": ModelDims}, read from the models' configs) is needed only
        by feature terms, whose projections are then sized from it."""
        super().__init__()
        config = config or ObjectiveConfig()
        unknown = sorted(set(config.tasks) - set(tasks))
        if unknown:
            raise ConfigError(f"key 'objective.tasks': {unknown} are not tasks of this run ({sorted(tasks)})")
        refuse_head_losses(tasks, config)
        check_terms_fit(config, tasks.values())
        self.tasks = tasks
        self.schedules = {name: [(term.weight, term.weight if term.weight_end is None else term.weight_end)
                                 for term in config.terms_for(task)] for name, task in tasks.items()}
        self.progress = 0.0
        self.terms = nn.ModuleDict({
            name: nn.ModuleList([build_loss(term.loss, dims=dims, **term.params) for term in config.terms_for(task)])
            for name, task in tasks.items()
        })
        # Per task, the features and layers each side must produce (the union of what its terms declare).
        self.student_want = {name: self._wanted(name, "student") for name in tasks}
        self.teacher_want = {name: self._wanted(name, "teacher") for name in tasks}

    def _wanted(self, task: str, side: str) -> dict[str, tuple[int, ...]]:
        """{feature: layer numbers} that ``side`` must give for ``task``'s terms; empty when none reads features."""
        wanted: dict[str, set[int]] = {}
        for term in self.terms[task]:
            if hasattr(term, "feature_request"):
                for name, layers in term.feature_request()[side].items():
                    wanted.setdefault(name, set()).update(layers)
        return {name: tuple(sorted(layers)) for name, layers in sorted(wanted.items())}

    @property
    def needs_teacher_logits(self) -> bool:
        """Whether a term reads the teachers' logits or mean (from a store or online teachers)."""
        return any(set(t.inputs) & TEACHER_LOGIT_INPUTS for terms in self.terms.values() for t in terms)

    @property
    def needs_teacher_features(self) -> bool:
        """Whether a term reads the teachers' features (online teachers, or a store that holds hidden states)."""
        return any(bool(want) for want in self.teacher_want.values())

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
        inputs = {"task": task.name, "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "token_type_ids": batch.get("token_type_ids")}
        want = self.student_want[task.name]
        if set(want) & set(DOMAIN_FEATURES):  # the domain branch reads the batch's domain ids
            if batch.get("domain_ids") is None:
                raise ConfigError(f"task '{task.name}': the loss terms read the domain branch's "
                                  f"{sorted(set(want) & set(DOMAIN_FEATURES))}, which need domain ids; "
                                  f"{_HOW_TO_GET['domain_ids']}")
            inputs["domain_ids"] = batch["domain_ids"]
        # Logit-only objectives call the model exactly as before; feature terms ask the same forward for features.
        outputs = model(**inputs, want=want) if want else model(**inputs)
        teacher_logits = batch.get("teacher_logits")
        named = {"student_logits": outputs.logits, "labels": batch.get("labels"), "task": task,
                 "teacher_mean": batch.get("teacher_mean"),
                 # K teachers' logits (B, K, C) -> their mean, the target of logit-matching terms.
                 "teacher_logits": mean_teacher_logits(teacher_logits) if teacher_logits is not None else None,
                 "student_features": outputs.features if want else None,
                 "teacher_features": batch.get("teacher_features") or None,
                 "domain_ids": batch.get("domain_ids"), "example_ids": batch.get("ids")}
        # The model ran under autocast: its outputs may be bf16/fp16. The terms get float32, so that a registered
        # loss with parameters of its own (a projection) works with autocast off, as the built-in ones do.
        if named["student_logits"] is not None:
            named["student_logits"] = named["student_logits"].float()
        for name in ("student_features", "teacher_features"):
            value = named[name]
            if isinstance(value, list | tuple):
                named[name] = [features.float32() for features in value]
            elif value is not None:
                named[name] = value.float32()
        example_weights = batch.get("weights")
        device = batch["input_ids"].device
        total = torch.zeros((), dtype=torch.float32, device=device)  # text tasks: no logits
        # The loss terms run in float32: under the loop's autocast a term's own `.float()` casts are undone by its
        # next matmul (relation_kl's Q.K^T, a projection); in bf16 that turned relation_kl's gradient by ~50 degrees
        # near convergence.
        with _autocast_off(device):
            total, logs = self._terms(task, named, example_weights, total)
        return ObjectiveOutput(loss=total, terms=logs)

    def _terms(self, task: Task, named: dict, example_weights: torch.Tensor | None,
               total: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``total`` plus the task's weighted terms, and {term name: value}."""
        logs = {}
        for index, term in enumerate(self.terms[task.name]):
            weight = self.weight(task.name, index)
            missing = [name for name in term.inputs if named[name] is None]
            if missing:
                how = _HOW_TO_GET.get(missing[0], "give the run a teacher-signal store")
                raise ConfigError(f"loss '{term.loss_name}' for task '{task.name}' needs {missing}: {how}")
            per_example = self._per_example(term, named)
            if example_weights is not None:
                per_example = per_example * example_weights
            value = per_example.mean()
            total = total + weight * value
            logs[term.loss_name] = float(value.detach())
        return total, logs

    @staticmethod
    def _per_example(term: nn.Module, named: dict) -> torch.Tensor:
        """The term's (B,) values; with a list of K teachers' features, the mean of its K per-teacher values."""
        teachers = named["teacher_features"]
        if "teacher_features" not in term.inputs or not isinstance(teachers, (list, tuple)):
            return term(*(named[name] for name in term.inputs))
        per_teacher = [term(*(teacher if name == "teacher_features" else named[name] for name in term.inputs))
                       for teacher in teachers]
        return torch.stack(per_teacher).mean(0)
