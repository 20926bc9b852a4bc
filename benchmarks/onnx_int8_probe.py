"""int8 ONNX probes (issue 16, part 2): onnxruntime options that `multidistill export` does not offer, timed
against PyTorch and the default int8 export in one process, so each can be judged before it becomes an option.

Run it after `benchmarks/onnx_int8.py`, whose plain export (OUT/exports/plain: fp32 and default int8 graphs) the
probes start from. Rows:

  torch fp32 eager                         the reference
  int8 dynamic (export default)            OUT/exports/plain/model.int8.onnx as exported
  int8 MatMulNBits 8-bit, block B          onnxruntime's weight-only quantiser (`MatMulNBitsQuantizer`, bits=8,
                                           symmetric, accuracy_level 4: int8 compute where the CPU has it); needs
                                           the onnx-ir package (`pip install onnx-ir`), skipped without it
  int8 dynamic + FastGelu                  onnxruntime's transformer optimizer with only the GELU fusion and its
                                           tanh approximation, then dynamic int8
  int8 dynamic, attention fusion only      the optimizer's Attention fusion alone (QAttention after int8), no
                                           LayerNorm or GELU fusion
  int8 dynamic, MultiHeadAttention         the same as MultiHeadAttention: Q/K/V stay separate int8 MatMuls and
                                           only the attention core (scores, mask, softmax, context) is one op
  int8 dynamic, SkipLayerNorm fused        the default graph with its shapes kept, so onnxruntime fuses the residual
                                           Add + LayerNormalization into SkipLayerNormalization when it loads it
                                           (exports drop those shapes; see `export.onnx._stamp`)
  int8 dynamic, denormals as zero          the default graph, session option session.set_denormal_as_zero
  int8 dynamic, Q/K/V merged               the fp32 graph's query, key and value projections (MatMuls reading one
                                           activation, each with its bias Add) merged into one MatMul + Add on the
                                           weights side by side and a Split, then dynamic int8 (same arithmetic)
  int8 dynamic, dynamic_block_base 2       the default graph, session option session.dynamic_block_base 2
                                           (onnxruntime's thread pool splits loops into shrinking blocks)

Beside the table, where the time goes: onnxruntime's profiler over the consecutive batch-32 SST-2 batches for the
default int8 graph and the fused export's (each op type's share of kernel time), and two kernels timed alone on
this CPU: an int8 GEMM (`MatMulInteger`, the int8 graph's MatMuls) against PyTorch's fp32 GEMM of the same shape,
and onnxruntime's Softmax against PyTorch's on a batch of attention scores.

Each probe is scored like an export's parity check (the first --parity-examples dev rows of every task, PyTorch
against the graph; `export.onnx.parity_failures` with the default tolerance) and timed like the benchmark.

    OMP_NUM_THREADS=1 python benchmarks/onnx_int8_probe.py --model runs/demo/student-transformer/model \\
        --exports runs/onnx_int8/exports --out runs/onnx_int8_probe

Writes OUT/onnx_int8_probe.json and OUT/onnx_int8_probe.md (the benchmark's table).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from multidistill.config import DataConfig
from multidistill.data.batches import map_batches
from multidistill.data.collate import collate
from multidistill.data.prepare import prepare_data
from multidistill.data.tasks import Task
from multidistill.evaluation.evaluate import predict
from multidistill.evaluation.speed import SETTLE_S, compare_speed, torch_forward
from multidistill.export.onnx import compare_predictions, parity_failures
from multidistill.export.onnx_variants import quantize_dynamic_int8
from multidistill.models.backbone import load_tokenizer
from multidistill.models.loading import load_model, saved_data_root
from multidistill.utils.atomic import write_json

sys.path.insert(0, str(Path(__file__).parent))
from onnx_int8 import REFERENCE, SPEEDUPS, _commit, cpu_info, markdown  # noqa: E402

DEFAULT = "int8 dynamic (export default)"


def _session(model: Path | bytes, config: dict[str, str] | None = None, profile_prefix: Path | None = None):
    """An onnxruntime CPU session on a graph file or serialised graph, with the process's thread count."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    source = str(model) if isinstance(model, Path) else model
    return onnxruntime.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _forward(session, task: str) -> Callable[[dict], np.ndarray]:
    names = {arg.name for arg in session.get_inputs()}

    def forward(batch: dict) -> np.ndarray:
        feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        if "token_type_ids" in names:
            types = batch.get("token_type_ids")
            feed["token_type_ids"] = types.numpy() if types is not None else np.zeros_like(feed["input_ids"])
        return session.run([f"logits_{task}"], feed)[0]

    return forward


def _nbits(source: Path, target: Path, block_size: int) -> str | None:
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:  # onnx-ir missing
        return f"skipped: {exc}"
    quantizer = MatMulNBitsQuantizer(str(source), bits=8, block_size=block_size, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), False)
    return None


def _optimized_int8(source: Path, target: Path, model, *, attention: bool, gelu_approximation: bool,
                    multi_head: bool = False) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for name in ("enable_skip_layer_norm", "enable_bias_skip_layer_norm", "enable_layer_norm",
                 "enable_embed_layer_norm"):
        setattr(options, name, False)
    options.enable_attention = attention
    options.use_multi_head_attention = multi_head
    options.enable_gelu = options.enable_bias_gelu = gelu_approximation
    options.enable_gelu_approximation = gelu_approximation
    config = model.backbone.config
    fp32 = target.with_suffix(".fp32.onnx")
    optimize_model(str(source), model_type="bert", num_heads=config.num_attention_heads,
                   hidden_size=config.hidden_size, opt_level=0,
                   optimization_options=options).save_model_to_file(str(fp32))
    quantize_dynamic_int8(fp32, target)


def _with_shapes(source: Path, target: Path) -> None:
    """Dynamic int8 of the fp32 graph with ONNX's inferred shapes kept in it (value_info), as the quantiser leaves
    them before an export drops them."""
    import onnx

    shaped = target.with_suffix(".fp32.onnx")
    onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(source))), str(shaped))
    quantize_dynamic_int8(shaped, target)


def _merged_projections(source: Path, target: Path) -> int:
    """Dynamic int8 of the fp32 graph with every group of MatMuls that read one activation with constant 2-D
    weights and a bias Add each (an attention block's Q, K and V) merged into MatMul + Add + Split; returns the
    number of groups merged. Shapes are dropped afterwards, as an export drops them."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    groups: dict[str, list] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.output[0] in outputs:
            continue
        weight = weights.get(node.input[1], np.empty(0))
        if weight.ndim != 2:
            continue
        add = readers.get(node.output[0], [])  # the MatMul's only reader: an Add of a (width,) bias
        bias = [name for name in add[0].input if name != node.output[0]] if len(add) == 1 else []
        if (add and add[0].op_type == "Add" and len(bias) == 1 and bias[0] in weights
                and weights[bias[0]].shape == (weight.shape[1],)):
            groups.setdefault(node.input[0], []).append((node, add[0], bias[0]))
    index = {id(node): i for i, node in enumerate(graph.node)}
    inserted: dict[int, list] = {}
    dropped: set[int] = set()
    for number, (source_name, members) in enumerate(item for item in groups.items() if len(item[1]) > 1):
        tag = f"merged_{number}"
        graph.initializer.extend([
            numpy_helper.from_array(np.concatenate([weights[m.input[1]] for m, _, _ in members], axis=1), tag + ".w"),
            numpy_helper.from_array(np.concatenate([weights[b] for _, _, b in members]), tag + ".b"),
            numpy_helper.from_array(np.asarray([weights[m.input[1]].shape[1] for m, _, _ in members], np.int64),
                                    tag + ".split")])
        inserted[min(index[id(m)] for m, _, _ in members)] = [
            helper.make_node("MatMul", [source_name, tag + ".w"], [tag + ".mm"]),
            helper.make_node("Add", [tag + ".mm", tag + ".b"], [tag + ".add"]),
            helper.make_node("Split", [tag + ".add", tag + ".split"], [a.output[0] for _, a, _ in members], axis=-1)]
        dropped.update(index[id(node)] for m, a, _ in members for node in (m, a))
    nodes = [new for i, node in enumerate(graph.node) for new in inserted.get(i, []) + ([] if i in dropped else [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    fp32 = target.with_suffix(".fp32.onnx")
    onnx.save(model, str(fp32))
    quantize_dynamic_int8(fp32, target)
    quantised = onnx.load(str(target))
    quantised.graph.ClearField("value_info")
    onnx.save(quantised, str(target))
    return len(inserted)


def run(model_dir: Path, exports: Path, out: Path, *, parity_examples: int, rounds: int, latency_runs: int,
        throughput_batches: int, data_root: str | None, cache_dir: str) -> dict:
    model = load_model(model_dir).eval()
    tokenizer = load_tokenizer(str(model_dir))
    pad = tokenizer.pad_token_id or 0
    specs: list[Task] = list(model.tasks.values())
    root = data_root if data_root is not None else saved_data_root(model_dir)
    data = DataConfig(tasks=[s.name for s in specs], data_root=root, cache_dir=cache_dir, task_specs=specs)
    eval_sets = prepare_data(data, tokenizer, model.max_length or 128, max_examples_per_task=None, seed=0,
                             need_train=False).eval_sets
    parity_sets = {name: ds.select(range(min(parity_examples, len(ds)))) for name, ds in eval_sets.items()}
    fp32, default = exports / "plain" / "model.onnx", exports / "plain" / "model.int8.onnx"
    out.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, tuple[Path, dict[str, str] | None]] = {DEFAULT: (default, None)}
    notes: dict[str, str] = {}
    for block in (32, 128):
        name, path = f"int8 MatMulNBits 8-bit, block {block}", out / f"nbits{block}.onnx"
        note = _nbits(fp32, path, block)
        if note:
            notes[name] = note
        else:
            graphs[name] = (path, None)
    _optimized_int8(fp32, out / "fastgelu.onnx", model, attention=False, gelu_approximation=True)
    graphs["int8 dynamic + FastGelu"] = (out / "fastgelu.onnx", None)
    _optimized_int8(fp32, out / "attention.onnx", model, attention=True, gelu_approximation=False)
    graphs["int8 dynamic, attention fusion only"] = (out / "attention.onnx", None)
    _optimized_int8(fp32, out / "mha.onnx", model, attention=True, gelu_approximation=False, multi_head=True)
    graphs["int8 dynamic, MultiHeadAttention"] = (out / "mha.onnx", None)
    _with_shapes(fp32, out / "shapes.onnx")
    graphs["int8 dynamic, SkipLayerNorm fused"] = (out / "shapes.onnx", None)
    graphs["int8 dynamic, denormals as zero"] = (default, {"session.set_denormal_as_zero": "1"})
    notes["merged Q/K/V groups"] = str(_merged_projections(fp32, out / "merged.onnx"))
    graphs["int8 dynamic, Q/K/V merged"] = (out / "merged.onnx", None)
    graphs["int8 dynamic, dynamic_block_base 2"] = (default, {"session.dynamic_block_base": "2"})

    expected = {name: predict(model, model.tasks[name], ds, batch_size=32, pad_token_id=pad,
                              device=torch.device("cpu")) for name, ds in parity_sets.items()}
    torch_score = statistics.mean(float(compare_predictions(model.tasks[n], expected[n], expected[n],
                                                            np.asarray(ds["label"]))["metric_torch"])
                                  for n, ds in parity_sets.items())
    rows: dict[str, dict] = {REFERENCE: {"status": "ok", "score": torch_score}}
    task = specs[0]
    contenders = {REFERENCE: (torch_forward(model, task), eval_sets[task.name], pad)}
    for name, (path, config) in graphs.items():
        session = _session(path, config)
        parity = {n: compare_predictions(model.tasks[n], expected[n],
                                         map_batches(model.tasks[n], ds, _forward(session, n), batch_size=32,
                                                     pad_token_id=pad), np.asarray(ds["label"]))
                  for n, ds in parity_sets.items()}
        failures = parity_failures("int8", parity, tolerance_fp32=1e-4, max_metric_drop_int8=0.01)
        score = statistics.mean(float(p["metric_onnx"]) for p in parity.values())
        if failures:
            rows[name] = {"status": "failed", "score": score, "reasons": failures}
            continue
        rows[name] = {"status": "ok", "score": score, "disk_mb": path.stat().st_size / 1e6,
                      "agreement_min": min(p["agreement"] for p in parity.values() if p["agreement"] is not None)}
        contenders[name] = (_forward(session, task.name), eval_sets[task.name], pad)
    speeds = compare_speed(contenders, task, rounds=rounds, latency_runs=latency_runs,
                           throughput_batches=throughput_batches, batch_size=32, longest_first=True, cpu_time=True)
    base = speeds[REFERENCE]
    for name, result in speeds.items():
        rows[name].update(result.to_dict(), speedup_b1=base.latency_ms_median / result.latency_ms_median,
                          score_delta_points=100 * (rows[name]["score"] - torch_score))
        for key, field in SPEEDUPS.items():
            rows[name][key] = getattr(result, field) / getattr(base, field)
    profiled = {"int8 dynamic (export default)": default}
    if (exports / "fused" / "model.int8.onnx").is_file():
        profiled["int8 dynamic fused (export --graph fused)"] = exports / "fused" / "model.int8.onnx"
    batch_rows = min(len(eval_sets[task.name]), 32 * throughput_batches)
    batches = [collate(task, eval_sets[task.name][i:i + 32], pad) for i in range(0, batch_rows, 32)]
    profiles = {name: op_profile(path, batches, task.name, out) for name, path in profiled.items()}
    heads = model.backbone.config.num_attention_heads
    longest = max(b["input_ids"].shape[1] for b in batches)
    import onnxruntime

    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_info(),
              "threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__,
              "torch": torch.__version__, "commit": _commit(), "model": str(model_dir), "speed_task": task.name,
              "tasks": [s.name for s in specs],
              "settings": {"parity_examples": parity_examples, "rounds": rounds, "latency_runs": latency_runs,
                           "throughput_batches": throughput_batches, "batch_size": 32, "settle_s": SETTLE_S},
              "rows": rows, "skipped": notes, "op_profiles": profiles,
              "kernels": {"gemm": gemm_rates(), "softmax": softmax_times(32, heads, longest)}}
    write_json(out / "onnx_int8_probe.json", report)
    (out / "onnx_int8_probe.md").write_text(_markdown(report))
    return report


def op_profile(path: Path, batches: list[dict], task: str, out: Path, passes: int = 3) -> dict[str, float]:
    """Each op type's share (%) of onnxruntime's kernel time over ``passes`` runs of ``batches``, largest first."""
    import json

    session = _session(path, profile_prefix=out / "ort_profile")
    forward = _forward(session, task)
    forward(batches[0])
    for _ in range(passes):
        for batch in batches:
            forward(batch)
    trace = Path(session.end_profiling())
    totals: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"]
    trace.unlink()
    whole = sum(totals.values()) or 1.0
    return {op: round(100 * t / whole, 1) for op, t in sorted(totals.items(), key=lambda item: -item[1])}


def _timed(call: Callable[[], object], runs: int = 50) -> float:
    """Median seconds of ``call`` over ``runs`` calls, after 3 warm-up calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_rates(m: int = 1536, k: int = 384, n: int = 1536) -> dict[str, float]:
    """Operations per second (x 1e9) of an int8 GEMM in onnxruntime (uint8 activations x int8 weights, what the
    dynamic int8 graph's MatMuls run) and of PyTorch's fp32 GEMM of the same shape (a batch of 32 x 48 tokens
    through a 384 -> 1536 feed-forward layer)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])], [weights])
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    feed = {"a": rng.integers(0, 256, (m, k), dtype=np.uint8)}
    left, right = torch.randn(m, k), torch.randn(k, n)
    ops = 2 * m * k * n
    return {"shape": f"{m}x{k} @ {k}x{n}", "onnxruntime_int8_gops": ops / _timed(lambda: session.run(None, feed)) / 1e9,
            "torch_fp32_gflops": ops / _timed(lambda: left @ right) / 1e9}


MASKS = {"float32 lowest": float(np.finfo(np.float32).min), "-60": -60.0, "none": None}


def softmax_times(batch: int, heads: int, length: int) -> dict:
    """Milliseconds of one Softmax over attention scores [batch, heads, length, length] whose last quarter of keys is
    masked as padding with each of `MASKS` (float32's lowest: PyTorch's mask and the old export's; -60: the
    export's now; none: no padding), in onnxruntime (the graphs' op) and in PyTorch."""
    from onnx import TensorProto, helper

    shape = ["b", heads, "t", "t"]
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    result: dict = {"shape": f"{batch}x{heads}x{length}x{length}", "onnxruntime_ms": {}, "torch_ms": {}}
    for name, value in MASKS.items():
        scores = 3 * np.random.default_rng(0).standard_normal((batch, heads, length, length)).astype(np.float32)
        if value is not None:
            scores[..., length - length // 4:] = value
        tensor = torch.from_numpy(scores)
        result["onnxruntime_ms"][name] = 1000 * _timed(lambda: session.run(None, {"x": scores}))  # noqa: B023
        result["torch_ms"][name] = 1000 * _timed(lambda: tensor.softmax(-1))  # noqa: B023
    return result


def _markdown(report: dict) -> str:
    text = markdown(report) + "".join(f"\n{name}: {note}\n" for name, note in report["skipped"].items())
    for name, shares in report.get("op_profiles", {}).items():
        top = ", ".join(f"{op} {share:.1f}%" for op, share in list(shares.items())[:10])
        text += f"\nKernel time by op type, {name} (batch 32, onnxruntime profiler): {top}\n"
    kernels = report.get("kernels")
    if kernels:
        gemm, softmax = kernels["gemm"], kernels["softmax"]
        int8, fp32 = gemm["onnxruntime_int8_gops"], gemm["torch_fp32_gflops"]
        text += (f"\nGEMM {gemm['shape']}: onnxruntime int8 {int8:.0f} GOPS, PyTorch fp32 {fp32:.0f} GFLOPS "
                 f"({int8 / fp32:.1f}x). Softmax {softmax['shape']}, padding mask: "
                 + "; ".join(f"{mask}: onnxruntime {softmax['onnxruntime_ms'][mask]:.2f} ms, PyTorch "
                             f"{softmax['torch_ms'][mask]:.2f} ms" for mask in softmax["onnxruntime_ms"]) + ".\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/student-transformer/model"))
    parser.add_argument("--exports", type=Path, default=Path("runs/onnx_int8/exports"),
                        help="benchmarks/onnx_int8.py's OUT/exports (its plain export is the probes' start)")
    parser.add_argument("--out", type=Path, default=Path("runs/onnx_int8_probe"))
    parser.add_argument("--parity-examples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--throughput-batches", type=int, default=4)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=".cache/multidistill")
    args = parser.parse_args(argv)
    if not (args.exports / "plain" / "model.int8.onnx").is_file():
        print(f"{args.exports}/plain has no int8 export; run benchmarks/onnx_int8.py first", file=sys.stderr)
        return 2
    report = run(args.model, args.exports, args.out, parity_examples=args.parity_examples, rounds=args.rounds,
                 latency_runs=args.latency_runs, throughput_batches=args.throughput_batches,
                 data_root=args.data_root, cache_dir=args.cache_dir)
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
