"""Feature distillation through the one loop: online teachers, feature terms in the objective, scheduler and
selection choices, per-term logging."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from multidistill.config import LossTerm, ObjectiveConfig, TeacherRunConfig, TrainConfig
from multidistill.data.tasks import BUILTIN_TASKS
from multidistill.errors import ConfigError
from multidistill.models import MultiTaskModel
from multidistill.models.features import EncoderFeatures, ModelDims
from multidistill.training.checkpoint import list_checkpoints
from multidistill.training.objective import WeightedObjective
from multidistill.training.run import train_model
from multidistill.training.schedule import make_scheduler

STUDENT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 32, "max_position_embeddings": 64,
           # Far from the teacher's near-uniform relations at the start, so relation_kl has something to learn.
           "initializer_range": 0.5}
FEATURE_TERMS = [{"loss": "hard"}, {"loss": "hidden_mse"}, {"loss": "relation_kl", "params": {"relation_heads": 2}}]


class Crash(Exception):
    """Stands in for a kill."""


def _distill(raw: dict, tmp_path, name: str = "student", terms=None, **train) -> TeacherRunConfig:
    """A student (1 layer, width 16) distilled from the tiny 2-layer BERT folder, which has no heads."""
    terms = terms or FEATURE_TERMS
    return TeacherRunConfig.model_validate({
        **raw, "kind": "distill", "output_dir": str(tmp_path / name),
        "model": {**raw["model"], "backbone_config": STUDENT},
        "data": {**raw["data"], "tasks": ["toy_sent", "toy_pair"]},
        "train": {**raw["train"], **train},
        "objective": {"classification": terms, "regression": [{"loss": "hard"}]},
        "online_teachers": [raw["model"]["name_or_path"]],
    })


def _scalars(run_dir, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def test_feature_distillation_from_a_headless_online_teacher_learns_and_logs_each_term(tiny_run, tmp_path,
                                                                                      monkeypatch):
    raw, _ = tiny_run
    import multidistill.teachers.online as online

    asked = {"student": [], "teacher": []}
    student_features, teacher_features = MultiTaskModel.features, online.extract_features

    def spy_student(self, *args, want, **kwargs):
        asked["student"].append(tuple(sorted(want.items())))
        return student_features(self, *args, want=want, **kwargs)

    def spy_teacher(*args, want, **kwargs):
        asked["teacher"].append(tuple(sorted(want.items())))
        return teacher_features(*args, want=want, **kwargs)

    monkeypatch.setattr(MultiTaskModel, "features", spy_student)
    monkeypatch.setattr(online, "extract_features", spy_teacher)
    train_model(_distill(raw, tmp_path, epochs=3))

    # Only what the terms declare: hidden states (hidden_mse's uniform map of a 1-layer student onto a 2-layer
    # teacher: 0 -> 0, 1 -> 2) and the last layer's Q/K/V (relation_kl); logits and pooled for `hard`.
    qkv = ("keys", "queries", "values")
    student = {"hidden_states": (0, 1), **dict.fromkeys(qkv, (1,)), "logits": (), "pooled": ()}
    assert set(asked["student"]) == {tuple(sorted(student.items()))}
    assert set(asked["teacher"]) == {(("hidden_states", (0, 2)), *((n, (2,)) for n in qkv))}
    assert len(asked["teacher"]) == len(asked["student"]) > 0  # once per training batch; evaluation asks none
    # Each term is logged by name, and the feature terms go down as the student learns from the teacher.
    for name in ("hidden_mse", "relation_kl"):
        values = _scalars(tmp_path / "student", f"train/loss/{name}")
        assert len(values) > 6
        assert sum(values[-3:]) < 0.7 * sum(values[:3]), (name, values)
    assert _scalars(tmp_path / "student", "train/loss/hard")
    # The projection is trained with the student but never exported with it.
    weights = load_file(list_checkpoints(tmp_path / "student" / "checkpoints")[-1] / "trainables.safetensors")
    assert {k for k in weights if k.startswith("objective.")} == {
        "objective.terms.toy_sent.1.projection.weight", "objective.terms.toy_sent.1.projection.bias",
        "objective.terms.toy_pair.1.projection.weight", "objective.terms.toy_pair.1.projection.bias"}
    assert not any(k.startswith("teacher") for k in weights)  # the online teacher is outside checkpoints
    exported = load_file(tmp_path / "student" / "model" / "model.safetensors")
    assert not any(k.startswith("objective") or "projection" in k for k in exported)


def test_feature_distillation_resumes_exactly_projection_included(tiny_run, tmp_path):
    raw, _ = tiny_run
    uncut = train_model(_distill(raw, tmp_path, "uncut", epochs=1))

    def crash_at_step_8(state):
        if state.step == 8:
            raise Crash

    with pytest.raises(Crash):
        train_model(_distill(raw, tmp_path, "cut", epochs=1), on_step=crash_at_step_8)
    resumed = train_model(_distill(raw, tmp_path, "cut", epochs=1), resume=True)
    assert resumed.steps == uncut.steps
    expected = load_file(list_checkpoints(tmp_path / "uncut" / "checkpoints")[-1] / "trainables.safetensors")
    got = load_file(list_checkpoints(tmp_path / "cut" / "checkpoints")[-1] / "trainables.safetensors")
    assert expected.keys() == got.keys() and any(k.startswith("objective.") for k in expected)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_feature_losses_without_an_online_teacher_are_a_config_error_before_anything_is_written(tiny_run, tmp_path):
    raw, _ = tiny_run
    config = _distill(raw, tmp_path).model_copy(update={"online_teachers": []})
    with pytest.raises(ConfigError, match="online_teachers"):
        train_model(config)
    assert not (tmp_path / "student").exists()


def test_a_headless_teacher_cannot_give_logits(tiny_run, tmp_path):
    raw, _ = tiny_run
    with pytest.raises(ConfigError, match="no head"):
        train_model(_distill(raw, tmp_path, terms=[{"loss": "soft_ce"}, {"loss": "hidden_mse"}]))


# --- the objective with features, unit level ------------------------------------------------------

DIMS = ModelDims(hidden_size=4, num_layers=1, num_attention_heads=1)


class FixedFeatures(torch.nn.Module):
    """Stands in for a model that gives features when asked (and records what it was asked)."""

    def __init__(self, features: EncoderFeatures) -> None:
        super().__init__()
        self.features, self.asked = features, []

    def forward(self, task, input_ids, attention_mask, token_type_ids=None, want=None):
        self.asked.append(want)
        return SimpleNamespace(logits=torch.zeros(len(input_ids), 2), features=self.features if want else None)


def _features(seed: int) -> EncoderFeatures:
    generator = torch.Generator().manual_seed(seed)
    hidden = tuple(torch.randn(2, 3, 4, generator=generator) for _ in range(2))
    return EncoderFeatures(attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), dims=DIMS, hidden_states=hidden)


def test_k_teachers_average_the_per_teacher_losses_and_the_student_is_asked_only_for_declared_features():
    tasks = {"sst2": BUILTIN_TASKS["sst2"]}
    config = ObjectiveConfig(classification=[LossTerm(loss="hidden_mse", params={"projection": False})])
    objective = WeightedObjective(tasks, config, dims={"student": DIMS, "teacher": DIMS})
    model = FixedFeatures(_features(0))
    batch = {"task": "sst2", "input_ids": torch.zeros(2, 3, dtype=torch.long),
             "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]), "labels": torch.tensor([0, 1])}
    one = objective(model, {**batch, "teacher_features": _features(1)}).loss
    two = objective(model, {**batch, "teacher_features": [_features(2)]}).loss
    both = objective(model, {**batch, "teacher_features": [_features(1), _features(2)]}).loss
    assert both.item() == pytest.approx((one.item() + two.item()) / 2)
    assert model.asked == [{"hidden_states": (0, 1)}] * 3
    assert objective.teacher_want == {"sst2": {"hidden_states": (0, 1)}}
    with pytest.raises(ConfigError, match="online_teachers"):
        objective(model, batch)


def test_feature_terms_need_the_models_sizes():
    tasks = {"sst2": BUILTIN_TASKS["sst2"]}
    with pytest.raises(ConfigError, match="sizes"):
        WeightedObjective(tasks, ObjectiveConfig(classification=[LossTerm(loss="hidden_mse")]))


# --- scheduler and selection ------------------------------------------------------------------------

def _lrs(name: str, steps: int = 10) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, TrainConfig(lr_scheduler=name, warmup_ratio=0.2), steps)
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


def test_lr_scheduler_choices():
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_linear_schedule_with_warmup(optimizer, 2, 10)
    expected = []
    for _ in range(10):
        expected.append(reference.get_last_lr()[0])
        optimizer.step()
        reference.step()
    assert TrainConfig().lr_scheduler == "linear" and _lrs("linear") == pytest.approx(expected)
    assert _lrs("constant") == pytest.approx([0.0, 0.5] + [1.0] * 8)
    cosine = _lrs("cosine")  # warm-up, then half a cosine: 1 at step 2, 0.5 half-way through the decay
    assert cosine[:3] == pytest.approx([0.0, 0.5, 1.0]) and cosine[6] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TrainConfig(lr_scheduler="step")


@pytest.mark.parametrize("select", ["last", "lowest_loss"])
def test_selection_choices(tiny_run, tmp_path, select):
    raw, _ = tiny_run
    raw = {**raw, "data": {**raw["data"], "tasks": ["toy_sent"]},
           "train": {**raw["train"], "select": select, "eval_every_steps": 4, "lr_scheduler": "cosine",
                     **({"holdout_fraction": 0.25} if select == "lowest_loss" else {})}}
    result = train_model(TeacherRunConfig.model_validate(raw))
    history = json.loads((tmp_path / "run" / "train_history.json").read_text())
    if select == "last":
        assert result.best_step == result.steps == history[-1]["step"]
    else:
        losses = {h["step"]: h["holdout_loss"] for h in history}
        assert result.best_step == min(losses, key=losses.get)
        # 24 of 96 rows held out: 72 train in batches of 8, 9 steps an epoch, 2 epochs.
        assert result.steps == 18
    exported = MultiTaskModel.from_pretrained(tmp_path / "run" / "model")
    assert set(exported.heads) == {"toy_sent"}


def test_a_store_gives_the_logits_and_an_online_encoder_the_features_in_one_run(tiny_run, tmp_path, monkeypatch):
    from multidistill.config import DataConfig
    from multidistill.teachers.generate import build_signal_store
    from multidistill.teachers.online import OnlineSignals

    raw, _ = tiny_run
    tasks = ["toy_sent", "toy_pair"]
    teacher = TeacherRunConfig.model_validate({**raw, "output_dir": str(tmp_path / "teacher"),
                                               "data": {**raw["data"], "tasks": tasks},
                                               "train": {**raw["train"], "epochs": 0.5}})
    train_model(teacher)
    build_signal_store([tmp_path / "teacher" / "model"], DataConfig.model_validate(teacher.data.model_dump()),
                               tmp_path / "store", seed=7)
    seen = []
    call = OnlineSignals.__call__

    def spy(self, batch):
        out = call(self, batch)
        seen.append((self.logits, "teacher_features" in out, "teacher_mean" in batch))
        return out

    monkeypatch.setattr(OnlineSignals, "__call__", spy)
    config = _distill(raw, tmp_path, terms=[{"loss": "soft_ce"}, {"loss": "hidden_mse"}], epochs=0.5)
    result = train_model(config.model_copy(update={"signals": str(tmp_path / "store")}))
    assert result.steps > 0
    # The online (headless) teacher computes features only; the logits came from the store before it ran.
    assert seen and set(seen) == {(False, True, True)}


def test_only_the_asked_layers_are_captured(tiny_model_dir):
    from transformers import AutoModel

    from multidistill.models.extract import extract_features

    encoder = AutoModel.from_pretrained(tiny_model_dir).eval()
    ids, mask = torch.tensor([[2, 40, 41, 3, 0]]), torch.tensor([[1, 1, 1, 1, 0]])
    full = extract_features(encoder, ids, mask, want={"queries", "attention_scores"})
    some = extract_features(encoder, ids, mask, want={"queries": (2,), "attention_scores": (1,)})
    assert some.queries[0] is None and torch.equal(some.queries[1], full.queries[1])
    assert some.attention_scores[1] is None and torch.equal(some.attention_scores[0], full.attention_scores[0])
    with pytest.raises(ConfigError, match="layers are 1..2"):
        extract_features(encoder, ids, mask, want={"keys": (3,)})


def test_an_online_teacher_asked_for_logits_and_features_runs_one_forward(tiny_run, tmp_path):
    """Logits and hidden states of a teacher with heads come from one pass of its encoder, equal to what two
    separate passes give, and stay on the training device (no CPU round trip)."""
    from multidistill.data.collate import collate
    from multidistill.data.prepare import prepare_data
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.online import OnlineSignals

    raw, _ = tiny_run
    teacher = TeacherRunConfig.model_validate({**raw, "output_dir": str(tmp_path / "teacher"),
                                               "train": {**raw["train"], "epochs": 0.5}})
    train_model(teacher)
    tokenizer = load_tokenizer(raw["model"]["name_or_path"])
    data = prepare_data(teacher.data, tokenizer, 32, max_examples_per_task=None, seed=7)
    online = OnlineSignals([tmp_path / "teacher" / "model"], tokenizer, list(data.tasks))
    online.request({"toy_sent": {"hidden_states": (0, 2)}})
    passes = []
    online.teachers[0].backbone.register_forward_hook(lambda *args: passes.append(1))
    batch = collate(data.tasks["toy_sent"], data.train_sets["toy_sent"][[0, 3, 5]], tokenizer.pad_token_id)
    both = online(dict(batch))
    assert len(passes) == 1  # one encoder pass gave both the logits and the hidden states
    model = online.teachers[0]
    with torch.no_grad():
        alone = model(task="toy_sent", input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"]).logits
        hidden = model.features("toy_sent", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                want={"hidden_states": (0, 2)}).hidden_states
    torch.testing.assert_close(both["teacher_logits"][:, 0], alone)
    assert both["teacher_logits"].dtype == torch.float32 and both["teacher_mean"].shape == alone.shape
    for got, expected in zip(both["teacher_features"][0].hidden_states, hidden, strict=True):
        torch.testing.assert_close(got, expected)
    # A task whose terms read no features: logits only, still one pass.
    passes.clear()
    pair = collate(data.tasks["toy_pair"], data.train_sets["toy_pair"][[0, 1]], tokenizer.pad_token_id)
    assert "teacher_features" not in online(dict(pair)) and len(passes) == 1


def test_online_teachers_no_term_reads_are_noted(tiny_run, tmp_path, capsys):
    """A hard-only objective with online teachers trained exactly as without them, without a word."""
    raw, _ = tiny_run
    train_model(_distill(raw, tmp_path, terms=[{"loss": "hard"}], epochs=0.25))
    said = " ".join(capsys.readouterr().out.split())
    assert "note: key 'online_teachers': no loss term reads their outputs (features or logits)" in said
