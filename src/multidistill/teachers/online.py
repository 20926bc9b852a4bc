"""Online teacher signals: run the teacher(s) on each training batch instead of reading a store.

The store is the default for logits (teachers run once, every student reuses it). Online teachers are for what
a store cannot hold: features inside the encoder (hidden states, attention, Q/K/V) for feature losses, inputs
that change each epoch, and measuring what the store saves. They read the student's token ids, so they must
share the student's tokenizer.

An online teacher is frozen (eval mode, ``requires_grad`` off), runs on the training device under ``no_grad``
(and the loop's autocast), and is held here, outside the trained modules: so outside DDP and outside checkpoints.
It computes only what the objective asked for (`request`). A teacher that only gives features needs no heads:
a plain Hugging Face encoder folder or hub name works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.models.backbone import load_backbone, load_tokenizer, resolve_model_path
from multidistill.models.extract import extract_features, with_features
from multidistill.models.families import model_dims
from multidistill.models.features import DOMAIN_FEATURES, EncoderFeatures, ModelDims
from multidistill.models.loading import load_model
from multidistill.models.multitask import MODEL_CONFIG_FILE
from multidistill.teachers.coverage import task_teachers
from multidistill.teachers.reduce import teacher_mean
from multidistill.training.objective import check_branch_domains
from multidistill.utils.hashing import same_tokenization


def load_teacher(name_or_path: str | Path) -> nn.Module:
    """A multidistill model folder (with heads), or else any Hugging Face encoder (features only)."""
    path = Path(resolve_model_path(str(name_or_path)))
    return load_model(path) if (path / MODEL_CONFIG_FILE).is_file() else load_backbone(str(name_or_path))


def teacher_dims(teacher: nn.Module) -> ModelDims:
    """The sizes a feature loss's projection is built from, read from the teacher's config."""
    return teacher.model_dims() if hasattr(teacher, "model_dims") else model_dims(teacher.config)


class OnlineSignals:
    """`enrich` for the training loop: adds what the objective asked of the teachers to a batch.

    ``teacher_logits`` (B, K, C) and ``teacher_mean`` (B, C) in float32, when ``logits``; ``teacher_features``, a
    list of K `EncoderFeatures`, for the tasks whose feature terms asked (`request`); all on the training device.
    A teacher asked for both runs one forward, whose features include its head's logits.
    """

    def __init__(self, teacher_dirs: list[str | Path], student_tokenizer, tasks: Sequence[str] | Mapping[str, Task],
                 device: torch.device | None = None, *, logits: bool = True) -> None:
        """``tasks``: the run's tasks, by name, or as their specs (then a head whose type or labels differ from
        its task's is refused when the objective reads logits)."""
        self.device = device or torch.device("cpu")
        self.logits = logits
        self.want: dict[str, Mapping[str, tuple[int, ...]]] = {}
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.teachers: list[nn.Module] = []
        self.folders = [str(folder) for folder in teacher_dirs]
        for folder in teacher_dirs:
            teacher = load_teacher(folder)
            if not same_tokenization(load_tokenizer(str(folder)), student_tokenizer):
                raise ConfigError(f"key 'online_teachers': {folder} uses another tokenizer than the student; "
                                  "online teachers read the student's tokens, and token-level losses (hidden "
                                  "states, attention, relations) compare position by position, which only line up "
                                  "when both split text the same way. Logit losses still work: give them the "
                                  "teacher's logits through a signal store (`multidistill soft-targets`, key "
                                  "'signals'), which is keyed by example, not by token")
            teacher.eval().requires_grad_(False)  # frozen: never trained, no gradients kept
            self.teachers.append(teacher.to(self.device))
        # Logits of a task come from the teachers with a head for it (`teachers.coverage`); features from every one.
        heads = [getattr(teacher, "tasks", {}) for teacher in self.teachers]  # a plain encoder has none
        if logits and self.teachers:  # (none: teachers set afterwards, as a test does)
            # Task names alone are checked against the teachers' own specs of them (only coverage then counts).
            specs = tasks if isinstance(tasks, Mapping) else {
                t: next((h[t] for h in heads if t in h and h[t].has_head), None) for t in tasks}
            self.covering = task_teachers(self.folders, heads, specs, key="online_teachers",
                                          why="the objective reads teacher logits (a plain encoder can only give "
                                              "features)")
        else:  # features only: every teacher gives them, with or without a head
            self.covering = {t: [i for i, h in enumerate(heads) if t in h and h[t].has_head] for t in tasks}

    def dims(self) -> ModelDims:
        """The teachers' common sizes; feature losses hold one projection, so the teachers must agree."""
        found = {teacher_dims(t) for t in self.teachers}
        if len(found) != 1:
            raise ConfigError(f"key 'online_teachers': feature losses need teachers of one size, got "
                              f"{', '.join(sorted(map(repr, found)))}")  # ModelDims do not order
        return found.pop()

    def request(self, want: Mapping[str, Mapping[str, tuple[int, ...]]]) -> OnlineSignals:
        """Compute, per task, only these teacher features at these layers (the objective's ``teacher_want``)."""
        self.want = {task: dict(layers) for task, layers in want.items() if layers}
        return self

    def check_domain_branches(self, tasks: Mapping[str, Task]) -> None:
        """Refuse, before training, a requested domain-branch feature (`DOMAIN_FEATURES`, e.g. `transferable_mse`'s
        transferable vector) from a teacher without a domain branch, or with one over other domains than the task's:
        a batch's domain id k indexes the branch's k-th domain, so other domains would give other vectors, silently."""
        for task_name, want in self.want.items():
            asked = sorted(set(want) & set(DOMAIN_FEATURES))
            if not asked:
                continue
            task = tasks[task_name]
            for folder, teacher in zip(self.folders, self.teachers, strict=True):
                branch = getattr(teacher, "domain_branch", None)
                if branch is None:
                    raise ConfigError(f"key 'online_teachers': the objective reads the teacher's {asked} on task "
                                      f"'{task_name}', which come from a Meta-KD domain branch, and {folder} has "
                                      "none; give a meta-teacher (a model trained with `model.domain_branch`)")
                check_branch_domains(branch.spec.domains, task, "online_teachers",
                                     f"{folder} gives the teacher's {asked} on task '{task_name}' from a domain "
                                     "branch over ")

    def to(self, device: torch.device) -> OnlineSignals:
        """Run the teachers on ``device`` (the training device), where their signals stay."""
        self.device = device
        self.teachers = [t.to(device) for t in self.teachers]
        return self

    def _features(self, teacher: nn.Module, task: str, inputs: dict, want: Mapping[str, tuple[int, ...]],
                  domain_ids: torch.Tensor | None = None) -> EncoderFeatures:
        if hasattr(teacher, "features"):  # a multidistill model; its head for the task only if it has one
            # A meta-teacher's domain branch (transferable vector) reads the batch's domain ids.
            domains = {"domain_ids": domain_ids} if set(want) & set(DOMAIN_FEATURES) else {}
            return teacher.features(task if task in teacher.tasks else None, **inputs, want=want, **domains)
        return extract_features(teacher, **inputs, want=want)

    def __call__(self, batch: dict) -> dict:
        task = batch["task"]
        inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids")
                  if batch.get(k) is not None}
        out = dict(batch)
        want = self.want.get(task)
        # no_grad rather than inference_mode: the losses save teacher tensors for the student's backward,
        # which inference tensors refuse.
        with torch.no_grad(), self.autocast():
            heads = self.covering.get(task) or range(len(self.teachers))
            if want:
                domain_ids = batch.get("domain_ids")
                domain_ids = domain_ids.to(self.device) if domain_ids is not None else None
                # With logits too, each teacher's one forward gives both (its head reads the same pass).
                asked = with_features(want, "logits") if self.logits else want
                features = [self._features(t, task, inputs, asked if i in heads else want, domain_ids)
                            for i, t in enumerate(self.teachers)]
                logits = [features[i].logits for i in heads]
                out["teacher_features"] = features
            elif self.logits:
                logits = [self.teachers[i](task=task, **inputs).logits for i in heads]
            if self.logits:  # float32 on the training device (a CPU round trip would be a copy each way)
                out["teacher_logits"] = torch.stack([t.float() for t in logits], dim=1)
        if self.logits:  # reduced outside autocast, in float32, exactly as the store reduces
            out["teacher_mean"] = teacher_mean(self.teachers[heads[0]].tasks[task].type, out["teacher_logits"])
        return out
