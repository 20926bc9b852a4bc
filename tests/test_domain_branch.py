"""Meta-KD's domain branch on `MultiTaskModel`: its outputs in `EncoderFeatures`, clear errors, save/load with the
model (strict), its config key, and that no export carries it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from multidistill.config import ModelConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError
from multidistill.models import MultiTaskModel, load_model
from multidistill.models.build import build_model
from multidistill.models.domain_branch import DomainBranchSpec, content_embedding
from multidistill.models.multitask import MODEL_CONFIG_FILE, WEIGHTS_FILE

SENT = Task(name="sent", labels=["neg", "pos"])
DOMAINS = ["books", "dvd", "electronics"]
TEXTS = ["the movie was great", "a very boring plot", "fine", "the actor was happy and the film was fun"]


def _tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _batch(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    encoded = _tokenizer(tiny_model_dir)(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "token_type_ids": encoded["token_type_ids"]}


def _model(tiny_model_dir: Path, branch: bool = True) -> MultiTaskModel:
    torch.manual_seed(0)
    spec = DomainBranchSpec(domains=DOMAINS) if branch else None
    return MultiTaskModel.from_backbone(str(tiny_model_dir), [SENT], max_length=24, domain_branch=spec)


DOMAIN_IDS = torch.tensor([2, 0, 1, 0])


def test_branch_outputs_are_named_features_computed_as_the_method_says(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    batch = _batch(tiny_model_dir)
    features = model.features("sent", **batch, want={"transferable", "domain_logits", "logits"},
                              domain_ids=DOMAIN_IDS)
    assert features.transferable.shape == (4, 32) and features.domain_logits.shape == (4, 3)
    with torch.no_grad():
        last = model.backbone(**batch).last_hidden_state
        mask = batch["attention_mask"].clone()
        mask[:, 0] = 0  # h_mean: real tokens after [CLS]
        h_mean = (last * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        branch = model.domain_branch
        tau = (branch.embedding.weight[DOMAIN_IDS] + h_mean) @ branch.transfer.weight.T + branch.transfer.bias
        logits = torch.tanh(tau) @ branch.classifier.weight.T + branch.classifier.bias
    torch.testing.assert_close(content_embedding(last, batch["attention_mask"]), h_mean)
    torch.testing.assert_close(features.transferable, tau, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.domain_logits, logits, atol=1e-5, rtol=1e-5)
    # Only what is asked is given; the task logits are the plain forward's.
    only = model.features("sent", **batch, want={"domain_logits"}, domain_ids=DOMAIN_IDS)
    assert only.transferable is None and only.logits is None
    output = model("sent", **batch, want={"transferable"}, domain_ids=DOMAIN_IDS)
    torch.testing.assert_close(output.logits, model("sent", **batch).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.features.transferable, tau, atol=1e-5, rtol=1e-5)


def test_the_domain_embedding_changes_tau_and_so_the_domain_logits(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    batch = _batch(tiny_model_dir)
    first = model.features("sent", **batch, want={"transferable"}, domain_ids=torch.zeros(4, dtype=torch.long))
    second = model.features("sent", **batch, want={"transferable"}, domain_ids=torch.ones(4, dtype=torch.long))
    difference = model.domain_branch.transfer(model.domain_branch.embedding.weight[1]) - \
        model.domain_branch.transfer(model.domain_branch.embedding.weight[0])
    torch.testing.assert_close(second.transferable - first.transferable, difference.expand(4, -1).detach(),
                               atol=1e-4, rtol=1e-4)


def test_a_model_without_the_branch_names_what_to_configure(tiny_model_dir):
    model = _model(tiny_model_dir, branch=False)
    with pytest.raises(ConfigError, match=r"\['domain_logits'\].*model.domain_branch: \{domains"):
        model.features("sent", **_batch(tiny_model_dir), want={"domain_logits"}, domain_ids=DOMAIN_IDS)


def test_missing_or_unknown_domain_ids_are_clear_errors(tiny_model_dir):
    model = _model(tiny_model_dir)
    batch = _batch(tiny_model_dir)
    with pytest.raises(ConfigError, match=r"need the batch's domain ids \(batch\['domain_ids'\]\)"):
        model.features("sent", **batch, want={"transferable"})
    with pytest.raises(ConfigError, match=r"domain ids \[3\] are outside the domain branch's 3 domains"):
        model.features("sent", **batch, want={"transferable"}, domain_ids=torch.tensor([0, 1, 2, 3]))


def test_the_spec_lists_sorted_distinct_domains_and_documents_every_field():
    assert DomainBranchSpec(domains=["a", "b"]).dropout == 0.1
    for bad in (["dvd", "books"], ["a", "a"], ["books"]):
        with pytest.raises(ValidationError):
            DomainBranchSpec(domains=bad)
    assert all(field.description for field in DomainBranchSpec.model_fields.values())
    assert ModelConfig.model_fields["domain_branch"].description
    with pytest.raises(ValidationError, match="Transformer model"):
        ModelConfig(name_or_path="x", architecture="bilstm", domain_branch={"domains": ["a", "b"]})


def test_save_load_round_trip_keeps_the_branch_and_records_it(tiny_model_dir, tmp_path):
    model = _model(tiny_model_dir).eval()
    with torch.no_grad():
        model.domain_branch.embedding.weight.add_(1.0)  # away from a fresh initialisation
    model.save_pretrained(tmp_path / "meta", tokenizer=_tokenizer(tiny_model_dir))
    config = json.loads((tmp_path / "meta" / MODEL_CONFIG_FILE).read_text())
    assert config["domain_branch"] == {"domains": DOMAINS, "dropout": 0.1}
    loaded = load_model(tmp_path / "meta").eval()
    assert loaded.domain_branch is not None and loaded.domain_branch.spec.domains == DOMAINS
    batch = _batch(tiny_model_dir)
    want = {"transferable", "domain_logits", "logits"}
    before = model.features("sent", **batch, want=want, domain_ids=DOMAIN_IDS)
    after = loaded.features("sent", **batch, want=want, domain_ids=DOMAIN_IDS)
    for name in want:
        assert torch.equal(getattr(before, name), getattr(after, name)), name
    # A model without the branch saves no key and loads without one, as before.
    _model(tiny_model_dir, branch=False).save_pretrained(tmp_path / "plain")
    assert "domain_branch" not in json.loads((tmp_path / "plain" / MODEL_CONFIG_FILE).read_text())
    assert load_model(tmp_path / "plain").domain_branch is None


def test_loading_is_strict_about_the_branch(tiny_model_dir, tmp_path):
    _model(tiny_model_dir, branch=False).save_pretrained(tmp_path / "plain")
    config_path = tmp_path / "plain" / MODEL_CONFIG_FILE
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "domain_branch": {"domains": DOMAINS}}))
    with pytest.raises(ModelError, match="missing.*domain_branch"):
        load_model(tmp_path / "plain")  # the config promises a branch the weights lack
    _model(tiny_model_dir).save_pretrained(tmp_path / "meta")
    (tmp_path / "meta" / WEIGHTS_FILE).replace(tmp_path / "plain" / WEIGHTS_FILE)
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="unexpected.*domain_branch"):
        load_model(tmp_path / "plain")  # weights of a branch the config does not describe
    config_path.write_text(json.dumps({**config, "domain_branch": {"domains": ["dvd", "books"]}}))
    with pytest.raises(ModelError, match="(?s)invalid model config.*sorted"):
        load_model(tmp_path / "plain")


def test_build_model_adds_the_configured_branch_and_init_from_keeps_it(tiny_model_dir, tmp_path):
    config = ModelConfig(name_or_path=str(tiny_model_dir), domain_branch={"domains": DOMAINS})
    model = build_model(config, [SENT])
    assert model.domain_branch.num_domains == 3
    model.save_pretrained(tmp_path / "meta")
    kept = build_model(ModelConfig(name_or_path=str(tiny_model_dir), init_from=str(tmp_path / "meta")), [SENT])
    assert kept.domain_branch is not None
    torch.testing.assert_close(kept.domain_branch.embedding.weight, model.domain_branch.embedding.weight)
    with pytest.raises(ConfigError, match="model.domain_branch.domains"):
        build_model(ModelConfig(name_or_path=str(tiny_model_dir), init_from=str(tmp_path / "meta"),
                                domain_branch={"domains": ["a", "b"]}), [SENT])
    assert build_model(ModelConfig(name_or_path=str(tiny_model_dir)), [SENT]).domain_branch is None


def test_exports_drop_the_branch(tiny_model_dir, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnx
    from safetensors import safe_open

    from multidistill.export.hf import export_hf
    from multidistill.export.onnx import MODEL_FILES, export_onnx

    model = _model(tiny_model_dir)
    model.save_pretrained(tmp_path / "meta", tokenizer=_tokenizer(tiny_model_dir))
    branch_shapes = {tuple(p.shape) for name, p in model.named_parameters() if name.startswith("domain_branch.")}
    assert (3, 32) in branch_shapes  # the embedding and the classifier: no other tensor of the model is 3 x 32

    export_onnx(tmp_path / "meta", tmp_path / "onnx", skip_parity=True)  # a model saved without data
    graph = onnx.load(str(tmp_path / "onnx" / MODEL_FILES["fp32"])).graph
    assert not [init.name for init in graph.initializer if "domain" in init.name]
    onnx_shapes = {tuple(init.dims) for init in graph.initializer}
    assert (2, 32) in onnx_shapes and (3, 32) not in onnx_shapes  # the head is there, the branch is not

    export_hf(tmp_path / "meta", tmp_path / "hf", skip_parity=True)  # checked on built-in sentences
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())  # noqa: SIM118 (not a dict)
        shapes = {tuple(handle.get_slice(name).get_shape()) for name in names}
    assert not [name for name in names if "domain" in name] and (3, 32) not in shapes


def test_an_objective_trains_the_branch_of_a_real_model_and_online_teachers_give_their_tau(tiny_model_dir, tmp_path):
    from multidistill.config import LossTerm, ObjectiveConfig
    from multidistill.teachers.online import OnlineSignals
    from multidistill.training.objective import WeightedObjective

    teacher = _model(tiny_model_dir)
    teacher.save_pretrained(tmp_path / "meta", tokenizer=_tokenizer(tiny_model_dir))
    student = _model(tiny_model_dir)
    dims = {"student": student.model_dims(), "teacher": teacher.model_dims()}
    config = ObjectiveConfig(tasks={"sent": [LossTerm(loss="hard"), LossTerm(loss="domain_adversarial", weight=0.5),
                                             LossTerm(loss="transferable_mse", weight=0.5)]})
    objective = WeightedObjective({"sent": SENT}, config, dims=dims)
    online = OnlineSignals([tmp_path / "meta"], _tokenizer(tiny_model_dir), ["sent"], logits=False)
    online.request(objective.teacher_want)
    batch = {"task": "sent", **_batch(tiny_model_dir), "labels": torch.tensor([1, 0, 1, 1]),
             "domain_ids": DOMAIN_IDS, "ids": [0, 1, 2, 3]}
    enriched = online(batch)
    expected = teacher.eval().features("sent", **_batch(tiny_model_dir), want={"transferable"}, domain_ids=DOMAIN_IDS)
    torch.testing.assert_close(enriched["teacher_features"][0].transferable, expected.transferable)
    out = objective(student, enriched)
    assert set(out.terms) == {"hard", "domain_adversarial", "transferable_mse"}
    out.loss.backward()
    assert student.domain_branch.classifier.weight.grad.abs().sum() > 0
    assert student.domain_branch.embedding.weight.grad.abs().sum() > 0
    assert objective.terms["sent"][2].projection.weight.grad.abs().sum() > 0


def test_online_teachers_whose_branch_is_missing_or_over_other_domains_are_refused(tiny_model_dir, tmp_path):
    """transferable_mse reads an online teacher's transferable vector, indexed by the batch's domain ids: a teacher
    over other domains than the task's gave other vectors, silently, and one without a branch failed at the first
    batch. Both are refused by key when the teachers are asked (before the output folder is made); the task's own
    domains pass."""
    from multidistill.config import LossTerm, ObjectiveConfig
    from multidistill.teachers.online import OnlineSignals
    from multidistill.training.objective import WeightedObjective

    _model(tiny_model_dir).save_pretrained(tmp_path / "meta", tokenizer=_tokenizer(tiny_model_dir))
    _model(tiny_model_dir, branch=False).save_pretrained(tmp_path / "plain", tokenizer=_tokenizer(tiny_model_dir))
    student = _model(tiny_model_dir)
    config = ObjectiveConfig(tasks={"sent": [LossTerm(loss="hard"), LossTerm(loss="transferable_mse")]})
    objective = WeightedObjective({"sent": SENT}, config,
                                  dims={"student": student.model_dims(), "teacher": student.model_dims()})

    def check(folder: str, domains: list[str]) -> None:
        online = OnlineSignals([tmp_path / folder], _tokenizer(tiny_model_dir), ["sent"], logits=False)
        online.request(objective.teacher_want).check_domain_branches(
            {"sent": SENT.model_copy(update={"domains": tuple(domains)})})

    check("meta", DOMAINS)
    with pytest.raises(ConfigError) as error:
        check("meta", ["books", "dvd"])
    assert (f"key 'online_teachers': {tmp_path / 'meta'} gives the teacher's ['transferable'] on task 'sent' from a "
            f"domain branch over {DOMAINS}, but the task's domains are ['books', 'dvd']") in str(error.value)
    with pytest.raises(ConfigError, match=r"key 'online_teachers': .*\['transferable'\] on task 'sent'.* has none"):
        check("plain", DOMAINS)
    plain = OnlineSignals([tmp_path / "plain"], _tokenizer(tiny_model_dir), ["sent"], logits=False)
    plain.request({"sent": {"hidden_states": (1,)}}).check_domain_branches({"sent": SENT})  # no branch feature asked


def test_a_run_refuses_a_branch_over_other_domains_than_the_tasks_before_writing(tiny_run, tmp_path, monkeypatch,
                                                                                capsys):
    """`train-teacher` with model.domain_branch over three names (two-domain data) or other names trained (exit 0):
    the first batch only checked the domain ids' range. Refused by key with both lists, nothing written; the task's
    own list, in its order, trains. A branch that init_from keeps is held to the same rule, under its key."""
    from tests.test_cli import run_cli
    from tests.test_metakd import write_domain_task

    raw, write = tiny_run
    spec = write_domain_task(Path(raw["data"]["data_root"]))
    adversarial = {"classification": [{"loss": "hard"}, {"loss": "domain_adversarial", "weight": 0.5}]}
    base = {**raw, "data": {**raw["data"], "tasks": ["reviews"], "task_specs": [spec]}, "objective": adversarial,
            "train": {**raw["train"], "epochs": 1}}

    def run(model: dict, name: str) -> tuple[int, str, Path]:
        out = tmp_path / name
        code, output = run_cli(monkeypatch, capsys, "train-teacher",
                               str(write({**base, "output_dir": str(out), "model": {**raw["model"], **model}})))
        return code, " ".join(output.split()), out

    for name, domains in (("more", ["books", "dvd", "music"]), ("other", ["books", "music"])):
        code, said, out = run({"domain_branch": {"domains": domains}}, name)
        assert code == 2, said
        assert (f"key 'model.domain_branch.domains': domain_adversarial on task 'reviews' reads the model's domain "
                f"branch, which is over {domains}, but the task's domains are ['books', 'dvd']") in said, said
        assert "Traceback" not in said and not out.exists()
    code, said, _ = run({"domain_branch": {"domains": ["dvd", "books"]}}, "order")
    assert code == 2 and "key 'model.domain_branch.domains'" in said and "distinct and sorted" in said, said
    code, said, out = run({}, "none")  # a term on a branch the model does not have failed at the first batch
    assert code == 2 and "key 'objective': domain_adversarial on task 'reviews'" in said, said
    assert not out.exists()
    code, said, out = run({"architecture": "bilstm", "bilstm": {"init_embeddings": False}}, "bilstm")
    assert code == 2 and "which a BiLSTM model cannot have" in said and not out.exists(), said
    code, said, out = run({"domain_branch": {"domains": ["books", "dvd"]}}, "right")
    assert code == 0, said
    model = build_model(ModelConfig(name_or_path=raw["model"]["name_or_path"], domain_branch={"domains": DOMAINS}),
                        [Task.model_validate(spec)])
    model.save_pretrained(tmp_path / "saved", tokenizer=_tokenizer(Path(raw["model"]["name_or_path"])))
    code, said, out = run({"init_from": str(tmp_path / "saved")}, "kept")
    assert code == 2 and "key 'model.init_from': domain_adversarial on task 'reviews'" in said, said
    assert not out.exists()
