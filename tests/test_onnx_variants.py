"""ONNX export variants (issue 16): onnxruntime's transformer fusion with a loud fallback, dynamic and static
(calibrated, seeded) int8, per-tensor scales, the traced attention, the session fusions an export records, session
options; every variant loads and passes the parity gate."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from multidistill.errors import ConfigError, ModelError

# The trained tiny BERT / BiLSTM and toy data of the export tests (fixtures: toy, bert_dir, bilstm_dir).
from tests.test_export_onnx import TASKS, _assert_matches_torch, _batch, bert_dir, bilstm_dir, toy  # noqa: F401

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from multidistill.export.command import export_command  # noqa: E402
from multidistill.export.onnx import EXPORT_FILE, OnnxModel, export_onnx  # noqa: E402
from multidistill.export.onnx_variants import calibration_batches, describe, quantize_static_int8  # noqa: E402

VARIANTS = {  # name -> export_onnx keywords
    "dynamic": {},
    "dynamic-sdpa": {"attention": "sdpa"},
    "dynamic-per-tensor": {"per_channel": False},
    "fused-dynamic": {"graph": "fused"},
    "static": {"int8_method": "static", "calibration_examples": 32},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_exports_loads_and_matches_torch(name, toy, bert_dir, tmp_path):  # noqa: F811
    kwargs = VARIANTS[name]
    out = tmp_path / name
    meta = export_onnx(bert_dir, out, quantize="int8", parity_data=toy["data"], **kwargs)
    assert json.loads((out / EXPORT_FILE).read_text()) == meta
    variant = meta["variant"]
    nodes = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    int8_nodes = {node.op_type for node in onnx.load(str(out / "model.int8.onnx")).graph.node}
    if kwargs.get("graph") == "fused":
        assert variant["graph"] == "fused" and variant["optimizer_model_type"] == "bert"
        assert variant["fused_ops"]["Attention"] == 2 and "Attention" in nodes  # one per layer of the tiny BERT
        assert "SkipLayerNormalization" in nodes and "graph_note" not in variant
    else:
        mask = {"attention_mask": {"value": -60.0, "constants_changed": 1}} if name != "dynamic-sdpa" else {}
        assert variant == {"graph": "plain", "attention": kwargs.get("attention", "eager"), **mask,
                           "int8": variant["int8"]} and "Attention" not in nodes
        # the eager trace's padding mask is -60 now, in both graphs (the int8 graph is quantised from the fp32 one)
        assert (_lowest_constants(out / "model.onnx"), _lowest_constants(out / "model.int8.onnx")) == (
            (0, 0) if mask else (_lowest_constants(out / "model.onnx"),) * 2)
    # Eager attention builds one additive mask for all layers; SDPA's trace guards each layer's mask against NaN.
    assert ("IsNaN" in nodes) is (kwargs.get("attention") == "sdpa")
    assert f"{variant['graph']}, {kwargs.get('attention', 'eager')} attention" in describe(variant)
    int8 = variant["int8"]
    assert int8["method"] == kwargs.get("int8_method", "dynamic")
    assert int8["per_channel"] is kwargs.get("per_channel", True)
    if int8["method"] == "static":
        assert "QuantizeLinear" in int8_nodes and "DequantizeLinear" in int8_nodes
        assert "DynamicQuantizeLinear" not in int8_nodes
        assert int8["calibration_rows"] == {"rows": 3 * 32, "per_task": 32, "seed": 0, "tasks": TASKS,
                                            "split": "train"}
    else:
        assert "DynamicQuantizeLinear" in int8_nodes
    # The parity gate passed (export_onnx raises otherwise); fp32 also holds on other batch and sequence sizes.
    assert all(numbers["max_abs_diff"] <= 1e-4 for numbers in meta["parity"]["fp32"].values())
    _assert_matches_torch(bert_dir, out, 1e-4)
    fp32, quantised = OnnxModel.load(out), OnnxModel.load(out, "int8")
    batch = {k: v.numpy() for k, v in _batch(fp32.tokenizer, 5).items()}
    for task in ("toy_sent", "toy_pair"):
        assert (fp32.logits(task, **batch).argmax(-1) == quantised.logits(task, **batch).argmax(-1)).all()


def _lowest_constants(path) -> int:
    """How many scalar float constants of the graph at ``path`` hold float32's lowest value."""
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return sum(1 for t in [*tensors, *graph.initializer]
               if t.data_type == onnx.TensorProto.FLOAT and numpy_helper.to_array(t).size == 1
               and float(numpy_helper.to_array(t).reshape(())) <= -1e38)


def test_the_padding_mask_changes_only_where_it_reaches_a_softmax(tmp_path):
    """Where(pad, lowest, 0) + scores -> Softmax is the eager trace's mask: it becomes -60. A lowest constant that
    reaches no Softmax (a masked max-pooling after the encoder) stays."""
    from onnx import TensorProto, helper

    from multidistill.export.onnx_variants import soften_attention_mask

    lowest = float(np.finfo(np.float32).min)

    def scalar(name: str, value: float):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))

    nodes = [scalar("low_a", lowest), scalar("zero", 0.0), scalar("low_b", lowest),
             helper.make_node("Where", ["pad", "low_a", "zero"], ["mask"]),
             helper.make_node("Add", ["scores", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
             helper.make_node("Where", ["pad", "low_b", "scores"], ["for_max"]),
             helper.make_node("ReduceMax", ["for_max"], ["pooled"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("pad", TensorProto.BOOL, [1, 3]),
                                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert soften_attention_mask(path, -60.0) == 1
    values = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t).item()
              for n in onnx.load(str(path)).graph.node if n.op_type == "Constant"}
    assert values == {"low_a": -60.0, "zero": 0.0, "low_b": pytest.approx(lowest)}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, _ = session.run(None, {"pad": np.array([[False, False, True]]),
                                  "scores": np.array([[1.0, 2.0, 9.0]], dtype=np.float32)})
    assert probs[0, 2] < 1e-20 and probs[0, :2] == pytest.approx(np.exp([1, 2]) / np.exp([1, 2]).sum())


def test_the_padding_mask_value_can_stay_float32s_lowest_and_is_checked(toy, bert_dir, tmp_path):  # noqa: F811
    meta = export_onnx(bert_dir, tmp_path / "lowest", parity_data=toy["data"], attention_mask_value=None)
    assert "attention_mask" not in meta["variant"] and _lowest_constants(tmp_path / "lowest" / "model.onnx") == 1
    for bad in (-5.0, float("nan"), float("-inf"), -1e39):
        with pytest.raises(ConfigError, match=r"attention mask value .*: use a number from -3.40282e\+38 to -20"):
            export_onnx(bert_dir, tmp_path / "a", attention_mask_value=bad)
    with pytest.raises(ConfigError, match="--attention-mask-value 'tiny': give a number <= -20 or 'lowest'"):
        export_command(bert_dir, tmp_path / "a", attention_mask_value="tiny")
    with pytest.raises(ConfigError, match="attention mask value -5: use a number"):  # checked before any work
        export_command(bert_dir, tmp_path / "a", attention_mask_value="-5")
    with pytest.raises(ConfigError, match="--attention-mask-value and --tolerance-fp32 apply to --format onnx"):
        export_command(bert_dir, tmp_path / "a", format="hf", attention_mask_value="lowest")
    with pytest.raises(ConfigError, match="the sdpa trace keeps PyTorch's"):
        export_command(bert_dir, tmp_path / "a", attention="sdpa", attention_mask_value="-40")
    assert not (tmp_path / "a").exists()


def test_static_int8_of_a_fused_graph_is_refused_not_left_weight_only(toy, bert_dir, tmp_path):  # noqa: F811
    with pytest.raises(ModelError, match="found no activation it could quantise.*--graph plain"):
        export_onnx(bert_dir, tmp_path / "x", quantize="int8", parity_data=toy["data"], graph="fused",
                    int8_method="static", calibration_examples=16)
    assert not (tmp_path / "x").exists()


def test_fusion_of_an_unsupported_family_falls_back_with_a_message(toy, bilstm_dir, tmp_path, caplog,  # noqa: F811
                                                                   capsys):
    with caplog.at_level(logging.WARNING, logger="multidistill.export.onnx"):
        meta = export_onnx(bilstm_dir, tmp_path / "bilstm", quantize="int8", parity_data=toy["data"], graph="fused")
    note = meta["variant"]["graph_note"]
    assert meta["variant"]["graph"] == "plain" and "fused_ops" not in meta["variant"]
    assert "exported plain" in note and "no fusions for a BiLSTMModel" in note
    assert note in caplog.text
    export_command(bilstm_dir, tmp_path / "cli", quantize="int8", graph="fused", skip_parity=True)
    printed = capsys.readouterr().out
    assert "exported variant: graph: plain [fused graph requested but exported plain" in printed
    assert "int8: dynamic, per-channel weights" in printed


def test_static_calibration_is_seeded(toy, bert_dir, tmp_path):  # noqa: F811
    from multidistill.data.prepare import prepare_data
    from multidistill.models.backbone import load_tokenizer

    tokenizer = load_tokenizer(str(bert_dir))
    prepared = prepare_data(toy["data"], tokenizer, 32, max_examples_per_task=None, seed=0)
    train = {name: prepared.store.tokenized(name, "train", tokenizer, 32) for name in TASKS}

    def draw(seed: int) -> list[dict]:
        return calibration_batches(prepared.tasks, train, tokenizer.pad_token_id, examples=20, seed=seed,
                                   batch_size=8)

    first, again, other = draw(0), draw(0), draw(1)
    assert len(first) == 3 * 3 and sum(len(b["input_ids"]) for b in first) == 3 * 20
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again, strict=True) for k in a)
    assert any(a["input_ids"].shape != b["input_ids"].shape or not np.array_equal(a["input_ids"], b["input_ids"])
               for a, b in zip(first, other, strict=True))
    # The same rows give the same graph, byte for byte; other rows other activation ranges.
    export_onnx(bert_dir, tmp_path / "fp32", parity_data=None)
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    graphs = {}
    for name, batches in (("first", first), ("again", again), ("other", other)):
        quantize_static_int8(tmp_path / "fp32" / "model.onnx", tmp_path / f"{name}.onnx", batches, inputs)
        graphs[name] = (tmp_path / f"{name}.onnx").read_bytes()
    assert graphs["first"] == graphs["again"] and graphs["first"] != graphs["other"]


def test_static_export_from_the_command_calibrates_without_a_parity_check(toy, bert_dir, tmp_path,  # noqa: F811
                                                                          capsys):
    out = tmp_path / "static"
    export_command(bert_dir, out, quantize="int8", int8_method="static", skip_parity=True, calibration_examples=16,
                   calibration_seed=3, data_root=toy["data"].data_root, cache_dir=toy["data"].cache_dir)
    printed = capsys.readouterr().out
    assert "int8: static QDQ, per-channel weights, calibrated on 48 training rows (seed 3)" in printed
    meta = json.loads((out / EXPORT_FILE).read_text())
    assert "parity" not in meta and meta["variant"]["int8"]["calibration_rows"]["seed"] == 3
    OnnxModel.load(out, "int8")


def test_variant_choices_are_checked(toy, bert_dir, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="attention 'flash': choose one of eager, sdpa"):
        export_onnx(bert_dir, tmp_path / "a", attention="flash")
    with pytest.raises(ConfigError, match="a fused graph is traced with eager attention"):
        export_onnx(bert_dir, tmp_path / "a", graph="fused", attention="sdpa")
    with pytest.raises(ConfigError, match="--attention 'flash'"):
        export_command(bert_dir, tmp_path / "a", attention="flash")
    with pytest.raises(ConfigError, match="graph 'onnxsim': choose one of plain, fused"):
        export_onnx(bert_dir, tmp_path / "a", graph="onnxsim")
    with pytest.raises(ConfigError, match="int8_method 'qat': choose one of dynamic, static"):
        export_onnx(bert_dir, tmp_path / "a", quantize="int8", int8_method="qat")
    with pytest.raises(ConfigError, match="chooses the rows static int8 calibrates on"):  # (its data: the model's)
        export_onnx(bert_dir, tmp_path / "a", quantize="int8", calibration_examples=16)
    with pytest.raises(ConfigError, match="--int8-method 'qat'"):
        export_command(bert_dir, tmp_path / "a", quantize="int8", int8_method="qat")
    with pytest.raises(ConfigError, match="--graph 'x'"):
        export_command(bert_dir, tmp_path / "a", graph="x")
    assert not (tmp_path / "a").exists()


def test_session_options(toy, bert_dir, tmp_path):  # noqa: F811
    out = tmp_path / "export"
    export_onnx(bert_dir, out, quantize="int8")
    default = OnnxModel.load(out, "int8")
    batch = {k: v.numpy() for k, v in _batch(default.tokenizer, 5).items()}
    expected = default.logits("toy_sent", **batch)
    for optimization in ("extended", "basic", "disabled"):
        for mode in ("sequential", "parallel"):
            model = OnnxModel.load(out, "int8", optimization=optimization, execution_mode=mode, threads=1)
            np.testing.assert_allclose(model.logits("toy_sent", **batch), expected, atol=1e-4)
    with pytest.raises(ConfigError, match="optimization 'max': choose one of all, extended, basic, disabled"):
        OnnxModel.load(out, optimization="max")
    with pytest.raises(ConfigError, match="execution_mode 'async'"):
        OnnxModel.load(out, execution_mode="async")
