"""Online teacher signals: run the teacher(s) on each training batch instead of reading a store.

The store is the default (teachers run once, every student reuses it). Online signals are for what a
store cannot hold (inputs that change each epoch) and for measuring what the store saves. The teachers
read the student's token ids, so they must share the student's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from multidistill.errors import ConfigError
from multidistill.models.loading import load_model
from multidistill.teachers.signals import combine_teachers
from multidistill.utils.hashing import hash_tokenizer


class OnlineSignals:
    """`enrich` for the training loop: adds `teacher_logits` (B, K, C) and `teacher_mean` (B, C) to a batch."""

    def __init__(self, teacher_dirs: list[str | Path], student_tokenizer, tasks: list[str],
                 device: torch.device | None = None) -> None:
        from multidistill.models.backbone import load_tokenizer

        self.device = device or torch.device("cpu")
        self.teachers = []
        for folder in teacher_dirs:
            teacher = load_model(folder).to(self.device).eval()
            missing = [t for t in tasks if t not in teacher.tasks]
            if missing:
                raise ConfigError(f"key 'online_teachers': {folder} has no head for task(s) {missing}")
            if hash_tokenizer(load_tokenizer(str(folder))) != hash_tokenizer(student_tokenizer):
                raise ConfigError(f"key 'online_teachers': {folder} uses another tokenizer than the student; "
                                  "online teachers read the student's tokens (use a signal store instead)")
            self.teachers.append(teacher)

    def to(self, device: torch.device) -> OnlineSignals:
        """Run the teachers on ``device`` (the training device); outputs still come back on the CPU."""
        self.device = device
        self.teachers = [t.to(device) for t in self.teachers]
        return self

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        task = batch["task"]
        inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids")
                  if batch.get(k) is not None}
        logits = torch.stack([t(task=task, **inputs).logits.float().cpu() for t in self.teachers], dim=1)
        task_type = self.teachers[0].tasks[task].type
        mean = combine_teachers(task_type, logits.transpose(0, 1).numpy())
        return {**batch, "teacher_logits": logits, "teacher_mean": torch.from_numpy(mean)}
