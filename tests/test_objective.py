"""WeightedObjective: weighted loss terms per task, reading named tensors from outputs and batch."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from multidistill.config import LossTerm, ObjectiveConfig
from multidistill.data.tasks import BUILTIN_TASKS
from multidistill.errors import ConfigError
from multidistill.training.objective import WeightedObjective

LN3 = math.log(3.0)
TASKS = {"sst2": BUILTIN_TASKS["sst2"], "stsb": BUILTIN_TASKS["stsb"]}
GOLD = [LossTerm(loss="hard")]  # STS-B on gold labels, set as such: soft sst2 terms beside an unset list are refused


class FixedLogits(torch.nn.Module):
    """Stands in for a model: returns preset logits per task."""

    def __init__(self, logits: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, task, input_ids, attention_mask, token_type_ids=None):
        return SimpleNamespace(logits=self.logits[task])


def _batch(task: str, labels, **extra) -> dict:
    n = len(labels)
    return {"task": task, "input_ids": torch.zeros(n, 3, dtype=torch.long), "attention_mask": torch.ones(n, 3),
            "labels": torch.tensor(labels), **extra}


def test_mtdnn_kd_objective_is_half_hard_half_soft():
    config = ObjectiveConfig(classification=[LossTerm(loss="hard", weight=0.5), LossTerm(loss="soft_ce", weight=0.5)],
                             regression=GOLD)
    objective = WeightedObjective(TASKS, config)
    model = FixedLogits({"sst2": torch.tensor([[0.0, LN3], [0.0, LN3]])})  # p_S = [1/4, 3/4] for both rows
    batch = _batch("sst2", [1, 0], teacher_mean=torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    # hard: mean(-ln 3/4, -ln 1/4) = (0.287682 + 1.386294) / 2 = 0.836988
    # soft: -(1/2 ln 1/4 + 1/2 ln 3/4) = 0.836988 for each row (same value by symmetry of this example)
    out = objective(model, batch)
    assert out.loss.item() == pytest.approx(0.5 * 0.836988 + 0.5 * 0.836988, abs=1e-5)
    assert set(out.terms) == {"hard", "soft_ce"}


def test_per_example_weights_scale_each_row_before_the_mean():
    objective = WeightedObjective(TASKS)
    model = FixedLogits({"stsb": torch.tensor([[1.0], [3.0]])})
    # squared errors (1-2)^2 = 1 and (3-1)^2 = 4; weights 2 and 0 -> (2*1 + 0*4) / 2 = 1.
    out = objective(model, _batch("stsb", [2.0, 1.0], weights=torch.tensor([2.0, 0.0])))
    assert out.loss.item() == pytest.approx(1.0)


def test_per_task_overrides_and_teacher_logits_averaged_over_teachers():
    config = ObjectiveConfig(tasks={"stsb": [LossTerm(loss="logit_mse", weight=2.0)]})
    objective = WeightedObjective(TASKS, config)
    assert objective.needs_teacher
    model = FixedLogits({"stsb": torch.tensor([[1.0]])})
    # Two teachers say 2 and 4 -> mean 3; (1 - 3)^2 = 4; weight 2 -> 8.
    out = objective(model, _batch("stsb", [0.0], teacher_logits=torch.tensor([[[2.0], [4.0]]])))
    assert out.loss.item() == pytest.approx(8.0)


def test_missing_signals_and_unknown_tasks_are_config_errors():
    objective = WeightedObjective(TASKS, ObjectiveConfig(classification=[LossTerm(loss="soft_kl")], regression=GOLD))
    with pytest.raises(ConfigError, match="needs \\['teacher_mean'\\]"):
        objective(FixedLogits({"sst2": torch.zeros(1, 2)}), _batch("sst2", [1]))
    with pytest.raises(ConfigError, match="objective.tasks"):
        WeightedObjective(TASKS, ObjectiveConfig(tasks={"cola": [LossTerm(loss="hard")]}))
    assert not WeightedObjective(TASKS).needs_teacher


def test_linear_weight_schedule_moves_with_training_progress():
    config = ObjectiveConfig(classification=[LossTerm(loss="hard", weight=1.0, weight_end=0.0)])
    objective = WeightedObjective(TASKS, config)
    model = FixedLogits({"sst2": torch.tensor([[0.0, LN3]])})  # p_S = [1/4, 3/4]
    batch = _batch("sst2", [1])
    hard = -math.log(0.75)  # 0.287682
    assert objective(model, batch).loss.item() == pytest.approx(hard, abs=1e-6)
    objective.set_progress(0.25)
    assert objective(model, batch).loss.item() == pytest.approx(0.75 * hard, abs=1e-6)
    objective.set_progress(1.0)
    assert objective(model, batch).loss.item() == pytest.approx(0.0, abs=1e-7)


def test_linear_temperature_schedule_matches_the_fixed_temperature_loss():
    from multidistill.losses.distill import SoftKL

    config = ObjectiveConfig(classification=[LossTerm(loss="soft_kl", params={"temperature": 1.0,
                                                                              "temperature_end": 3.0})],
                             regression=GOLD)
    objective = WeightedObjective(TASKS, config)
    logits = torch.tensor([[0.0, LN3]])
    teacher = torch.tensor([[0.9, 0.1]])
    batch = _batch("sst2", [1], teacher_mean=teacher)
    objective.set_progress(0.5)  # T = 2
    expected = SoftKL(temperature=2.0)(logits, teacher).item()
    # By hand: q = softmax(ln[0.9, 0.1] / 2) = [0.75, 0.25]; p = softmax([0, ln3] / 2) = [1/(1+sqrt3), sqrt3/(1+sqrt3)]
    p0 = 1 / (1 + math.sqrt(3))
    by_hand = 4 * (0.75 * math.log(0.75 / p0) + 0.25 * math.log(0.25 / (1 - p0)))
    assert expected == pytest.approx(by_hand, abs=1e-5)
    assert objective(FixedLogits({"sst2": logits}), batch).loss.item() == pytest.approx(by_hand, abs=1e-5)
    with pytest.raises(ValidationError, match="temperature"):  # refused with the config, before any objective
        LossTerm(loss="soft_kl", params={"temperature": 0})


def test_a_per_task_term_of_the_other_task_type_is_refused_when_the_objective_is_built():
    from multidistill.errors import ConfigError

    regression = next(name for name, task in TASKS.items() if task.type == "regression")
    config = ObjectiveConfig(tasks={regression: [LossTerm(loss="soft_kl")]})
    with pytest.raises(ConfigError, match=f"objective.tasks.{regression}.0': loss 'soft_kl' is for classification"):
        WeightedObjective(TASKS, config)


@pytest.mark.parametrize("loss", ["relation_kl", "hidden_mse", "soft_ce"])
def test_terms_are_computed_in_float32_under_the_loops_autocast(loss):
    """The loop runs the objective inside bf16 autocast; a term's value must still be the float32 one. Without the
    objective turning autocast off, relation_kl's Q.K^T and hidden_mse's projection ran in bf16 (their `.float()`
    casts undone by autocast) and differed by ~1e-2 relative here."""
    from multidistill.models.features import EncoderFeatures, ModelDims

    dims = ModelDims(hidden_size=64, num_layers=2, num_attention_heads=4)
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(3, 12, dtype=torch.long)

    def feats() -> EncoderFeatures:
        def states() -> tuple[torch.Tensor, ...]:
            return tuple(torch.randn(3, 12, 64, generator=generator).to(torch.bfloat16) for _ in range(3))
        return EncoderFeatures(attention_mask=mask, dims=dims, hidden_states=states(), queries=states()[1:],
                               keys=states()[1:], values=states()[1:])

    student, teacher = feats(), feats()

    class FixedFeatures(torch.nn.Module):
        def forward(self, task, input_ids, attention_mask, token_type_ids=None, want=None):
            logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
            return SimpleNamespace(logits=logits, features=student)

    params = {"relation_kl": {"relation_heads": 4}, "hidden_mse": {}, "soft_ce": {"temperature": 2.0}}[loss]
    config = ObjectiveConfig(classification=[LossTerm(loss=loss, params=params)])
    torch.manual_seed(0)
    objective = WeightedObjective({"sst2": TASKS["sst2"]}, config, dims={"student": dims, "teacher": dims})
    batch = _batch("sst2", [0, 1, 1], teacher_features=teacher, teacher_mean=torch.tensor([[0.3, 0.7]] * 3))
    plain = objective(FixedFeatures(), batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = objective(FixedFeatures(), batch).loss
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(plain.item(), rel=1e-6)


def test_teacher_is_probs_false_softens_the_teachers_mean_logits():
    """`teacher_is_probs: false` reads the teachers' mean logits; it used to read their mean probabilities as if
    they were logits, softening them a second time (targets [0.98, 0.02] became [0.57, 0.43] and a student equal
    to its teacher had a KL of 1.19 in a 3-class case)."""
    teacher_logits = torch.tensor([[[3.0, -1.0], [0.0, 0.0]]])  # one row, K = 2 teachers, 2 classes
    mean_logits = teacher_logits.mean(1)
    mean_probs = torch.softmax(teacher_logits, -1).mean(1)
    batch = _batch("sst2", [0], teacher_logits=teacher_logits, teacher_mean=mean_probs)
    from_logits = WeightedObjective(TASKS, ObjectiveConfig(classification=[
        LossTerm(loss="soft_kl", params={"teacher_is_probs": False, "temperature": 2.0})], regression=GOLD))
    assert from_logits(FixedLogits({"sst2": mean_logits}), batch).loss.item() == pytest.approx(0.0, abs=1e-6)
    from_probs = WeightedObjective(TASKS, ObjectiveConfig(classification=[
        LossTerm(loss="soft_kl", params={"temperature": 2.0})], regression=GOLD))
    assert from_probs(FixedLogits({"sst2": mean_probs.log()}), batch).loss.item() == pytest.approx(0.0, abs=1e-6)
    assert from_probs(FixedLogits({"sst2": mean_logits}), batch).loss.item() > 1e-4  # the two targets differ


def test_an_objective_that_distils_one_task_type_but_leaves_another_out_is_refused():
    """Soft targets for SST-2 beside an unset regression list trained STS-B on gold labels alone, silently; and the
    reverse. Gold labels only, both lists given, or per-task terms: what was asked, accepted."""
    from multidistill.training.objective import refuse_unset_type_terms

    tasks = list(TASKS.values())
    with pytest.raises(ConfigError, match=r"key 'objective': task\(s\) \['stsb'\] are regression, and its regression "
                                          r"terms are not set, .* the objective's classification terms read the "
                                          r"teachers; set regression beside them \(MT-DNN-KD: "
                                          r"\[\{loss: hard\}, \{loss: score_mse\}\]"):
        refuse_unset_type_terms(ObjectiveConfig(classification=[LossTerm(loss="soft_ce")]), tasks)
    with pytest.raises(ConfigError, match=r"\['sst2'\] are classification, .* regression terms read the teachers"):
        refuse_unset_type_terms(ObjectiveConfig(regression=[LossTerm(loss="score_mse")]), tasks)
    with pytest.raises(ConfigError, match="are regression"):  # a feature term reads the teacher too
        refuse_unset_type_terms(ObjectiveConfig(classification=[LossTerm(loss="hard"), LossTerm(loss="hidden_mse")]),
                                tasks)
    for fine in (ObjectiveConfig(), ObjectiveConfig(classification=[LossTerm(loss="hard")]),
                 ObjectiveConfig(classification=[LossTerm(loss="soft_ce")], regression=GOLD),
                 ObjectiveConfig(classification=[LossTerm(loss="soft_ce")], tasks={"stsb": GOLD})):
        refuse_unset_type_terms(fine, tasks)
    refuse_unset_type_terms(ObjectiveConfig(classification=[LossTerm(loss="soft_ce")]), [TASKS["sst2"]])
    # a distilling list for a type no task of the run has: distillation was asked for, and nothing would distil
    with pytest.raises(ConfigError, match=r"\['sst2'\] are classification, .* while the objective's multilabel "
                                          r"terms read the teachers"):
        refuse_unset_type_terms(ObjectiveConfig(multilabel=[LossTerm(loss="soft_bce")]), tasks)
    # an empty per-task list falls back to the type's list (`terms_for`): still unset
    with pytest.raises(ConfigError, match="are regression"):
        refuse_unset_type_terms(ObjectiveConfig(classification=[LossTerm(loss="soft_ce")], tasks={"stsb": []}), tasks)


def test_a_registered_loss_with_its_own_parameters_runs_under_the_loops_autocast(monkeypatch):
    """The terms run with autocast off; a user's loss whose nn.Linear met the student's bf16 features failed with
    "mat1 and mat2 must have the same dtype": the objective hands every term float32 features."""
    from multidistill.losses.registry import LOSSES
    from multidistill.models.features import EncoderFeatures, ModelDims

    class OwnProjection(torch.nn.Module):
        inputs = ("student_features",)
        loss_name = "own_projection"  # what register_loss sets

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 1)

        def feature_request(self):
            return {"student": {"hidden_states": (1,)}, "teacher": {}}

        def forward(self, student):
            return self.linear(student.hidden_states[1]).mean((1, 2))

    monkeypatch.setitem(LOSSES, "own_projection", OwnProjection)
    dims = ModelDims(hidden_size=8, num_layers=1, num_attention_heads=1)
    states = tuple(torch.randn(2, 3, 8).to(torch.bfloat16) for _ in range(2))
    student = EncoderFeatures(attention_mask=torch.ones(2, 3), dims=dims, hidden_states=states)

    class Model(torch.nn.Module):
        def forward(self, task, input_ids, attention_mask, token_type_ids=None, want=None):
            return SimpleNamespace(logits=torch.zeros(2, 2, dtype=torch.bfloat16), features=student)

    objective = WeightedObjective({"sst2": TASKS["sst2"]},
                                  ObjectiveConfig(classification=[LossTerm(loss="own_projection")]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(Model(), _batch("sst2", [0, 1]))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_tasks_reading_labels_are_those_whose_terms_read_gold_labels():
    from multidistill.training.objective import tasks_reading_labels

    tasks = [BUILTIN_TASKS["sst2"], BUILTIN_TASKS["stsb"]]
    assert tasks_reading_labels(None, tasks) == ["sst2", "stsb"]  # the default objective has `hard`
    soft_only = ObjectiveConfig(classification=[LossTerm(loss="soft_ce")], regression=[LossTerm(loss="score_mse")])
    assert tasks_reading_labels(soft_only, tasks) == []
    mixed = ObjectiveConfig(classification=[LossTerm(loss="soft_ce")], tasks={"sst2": [LossTerm(loss="hard")]})
    assert tasks_reading_labels(mixed, tasks) == ["sst2", "stsb"]


def test_objective_for_tasks_keeps_a_one_task_stages_own_entries():
    """MKD's finetune-<task>/baseline-<task> and MITKD's fine-tunes were given the whole objective with a one-task
    data view: an `objective.tasks` naming two tasks was refused by the first such stage, after the joint one ran."""
    from multidistill.training.objective import objective_for_tasks

    both = ObjectiveConfig(classification=[LossTerm(loss="soft_ce")],
                           tasks={"sst2": [LossTerm(loss="hard")], "stsb": [LossTerm(loss="logit_mse", weight=2.0)]})
    with pytest.raises(ConfigError, match=r"key 'objective.tasks': \['stsb'\] are not tasks of this run"):
        WeightedObjective({"sst2": TASKS["sst2"]}, both)  # the stage's own check, which still refuses the whole
    run = list(TASKS)
    sst2 = objective_for_tasks(both, ["sst2"], run, key="student.objective")
    assert sst2.tasks == {"sst2": both.tasks["sst2"]}
    assert (sst2.classification, sst2.regression) == (both.classification, both.regression)
    assert WeightedObjective({"sst2": TASKS["sst2"]}, sst2).terms["sst2"][0].loss_name == "hard"
    stsb = objective_for_tasks(both, ["stsb"], run)
    assert list(stsb.tasks) == ["stsb"] and WeightedObjective({"stsb": TASKS["stsb"]}, stsb).needs_teacher
    assert objective_for_tasks(both, run, run) is both  # nothing to drop: the same settings, the same fingerprint
    own = ObjectiveConfig(tasks={"sst2": [LossTerm(loss="hard")]})
    assert objective_for_tasks(own, ["sst2"], run) is own
    # With every entry dropped, the stage's settings are those of an objective given none.
    plain = objective_for_tasks(own, ["stsb"], run)
    assert plain.model_dump(exclude_defaults=True) == ObjectiveConfig().model_dump(exclude_defaults=True)
    assert objective_for_tasks(None, ["sst2"], run) is None
    # An entry naming no task of the run (a typo) would be dropped from every stage: refused by the recipe's key.
    typo = ObjectiveConfig(tasks={"sst-2": [LossTerm(loss="hard")]})
    with pytest.raises(ConfigError, match=r"key 'finetune.objective.tasks': \['sst-2'\] are not tasks of this run "
                                          r"\(\['sst2', 'stsb'\]\)"):
        objective_for_tasks(typo, ["sst2"], run, key="finetune.objective")
    with pytest.raises(ValueError, match="not among the run's"):
        objective_for_tasks(own, ["cola"], run)


def test_reads_domain_branch_is_a_term_on_the_models_domain_outputs():
    from multidistill.training.objective import reads_domain_branch

    adversarial = [LossTerm(loss="hard"), LossTerm(loss="domain_adversarial", weight=0.5)]
    assert reads_domain_branch(ObjectiveConfig(classification=adversarial), ["sst2"])
    assert reads_domain_branch(ObjectiveConfig(classification=[LossTerm(loss="transferable_mse")]), ["sst2"])
    assert not reads_domain_branch(None, ["sst2"])
    assert not reads_domain_branch(ObjectiveConfig(classification=[LossTerm(loss="hidden_mse")]), ["sst2"])
    # A task's own terms replace the type lists: only they count for it.
    assert not reads_domain_branch(ObjectiveConfig(classification=adversarial,
                                                   tasks={"sst2": [LossTerm(loss="hard")]}), ["sst2"])
    assert reads_domain_branch(ObjectiveConfig(tasks={"sst2": adversarial}), ["stsb", "sst2"])


def test_a_domain_branch_read_by_a_term_must_be_over_the_tasks_domains():
    """A batch's domain id k is its task's k-th domain: a branch over more, fewer or other names trained with ids that
    meant other domains (only the ids' range was checked, at the first batch); refused with both lists. A task whose
    terms do not read the branch is not compared."""
    from multidistill.training.objective import check_domain_branch

    amazon, sst2 = BUILTIN_TASKS["amazon"], BUILTIN_TASKS["sst2"]
    domains = list(amazon.domains)
    adversarial = ObjectiveConfig(classification=[LossTerm(loss="hard"), LossTerm(loss="domain_adversarial")])
    check_domain_branch(adversarial, [amazon], domains)
    for other in ([*domains, "music"], domains[:2], ["books", "dvd", "music"]):
        with pytest.raises(ConfigError, match=rf"key 'model.domain_branch.domains': domain_adversarial on task "
                                              rf"'amazon' reads the model's domain branch, which is over "
                                              rf"{re.escape(str(other))}, but the task's domains are "
                                              rf"{re.escape(str(domains))}"):
            check_domain_branch(adversarial, [amazon], other)
    with pytest.raises(ConfigError, match="key 'model.init_from': domain_adversarial"):
        check_domain_branch(adversarial, [amazon], domains[:2], "model.init_from")
    with pytest.raises(ConfigError, match=r"key 'objective': .*which the model does not have; add "
                                          r"model.domain_branch over the task's domains"):
        check_domain_branch(adversarial, [amazon], None)
    with pytest.raises(ConfigError) as bilstm:  # advised adding model.domain_branch, which a BiLSTM then refused
        check_domain_branch(adversarial, [amazon], None, architecture="bilstm")
    assert "which a BiLSTM model cannot have" in str(bilstm.value) and "add model" not in str(bilstm.value)
    with pytest.raises(ConfigError, match="key 'objective': domain_adversarial on task 'sst2' .* the task has no "
                                          "domains"):
        check_domain_branch(adversarial, [sst2], domains)
    own = ObjectiveConfig(classification=[LossTerm(loss="hard")], tasks={"amazon": adversarial.classification})
    check_domain_branch(own, [amazon, sst2], domains)  # sst2's terms do not read the branch
    check_domain_branch(None, [amazon, sst2], None)
