"""benchmarks/mitkd_glue.py (issue 12 acceptance) end to end in --tiny mode: every stage, every row of every
group's table, the measurements, and a second run that reuses all of it and redoes only a run that is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import load_benchmark


def load_bench(monkeypatch):
    return load_benchmark("mitkd_glue", monkeypatch)


def stage_times(out: Path) -> dict[str, int]:
    return {str(path.relative_to(out)): path.stat().st_mtime_ns for path in out.rglob("stage.json")}


@pytest.mark.slow
def test_the_benchmark_runs_every_group_and_a_rerun_reuses_it(tmp_path, capsys, monkeypatch):
    bench = load_bench(monkeypatch)
    out = tmp_path / "bench"
    results = bench.main(["--tiny", "--out", str(out)])
    printed = capsys.readouterr().out

    # The QNLI split: every dev row exactly once, the seeded dev share apart; the corpus capped and counted.
    assert results["data"]["qnli"] == {"train": 48, "dev": 16}
    source = (out / "tiny" / "data" / "glue" / "QNLI" / "dev.tsv").read_text().splitlines()
    train, dev = ((out / "data" / "qnli" / f"{split}.tsv").read_text().splitlines() for split in ("train", "dev"))
    assert train[0] == dev[0] == source[0] and sorted(train[1:] + dev[1:]) == sorted(source[1:])
    assert dev[1:] != source[1:17]  # a seeded draw, not the first rows
    assert results["data"]["corpus"]["used"] == 96 < results["data"]["corpus"]["available"]
    assert "corpus: 96 texts" in printed
    ood = ["amazon-books", "amazon-dvd", "amazon-electronics"]
    for group, tasks in (("in-domain", bench.TASKS), ("low-resource", bench.TASKS), ("ood", ood)):
        part = results["groups"][group]
        assert part["tasks"] == part["averaged_over"] == tasks
        for model, row in part["rows"].items():
            assert sorted(row["tasks"]) == sorted(tasks) and row["missing_runs"] == 0, (group, model)
            assert row["average"] is not None
        assert part["rows"]["reference"]["retention"] in (1.0, None)  # None: a reference average <= 0
        assert f"## {group} " in printed
    assert all(printed.count(f"| {label} |") == 4 for label in bench.MODELS.values())  # 3 groups + speed table
    assert [row["stage"] for row in results["stages"]][:3] == ["teacher-seed-1", "general-mitkd", "general-plain"]
    assert results["general_cost"]["batches"] == 2 and results["general_cost"]["limit_examples_per_second"] > 0
    assert set(results["speed"]) == set(bench.MODELS)
    assert len(results["targets"]) == 6 and all(t["met"] is not None for t in results["targets"])
    assert json.loads((out / "results.json").read_text())["groups"] == results["groups"]
    # Groups never share a folder: the recipe holds the in-domain fine-tunes only; finished ones keep no checkpoint.
    assert len(list((out / "recipe").glob("finetune-*"))) == 2 * len(bench.TASKS)
    assert not list(out.rglob("finetune-*/checkpoints")) and not list((out / "groups").rglob("checkpoints"))

    # A re-run reuses every stage and measurement; a run that is gone (say, cut before it wrote anything) is redone.
    gone = out / "groups" / "ood" / "reference" / "amazon-dvd-seed-1"
    before = stage_times(out)
    measured = (out / "general_cost.json").stat().st_mtime_ns, (out / "speed.json").stat().st_mtime_ns
    shutil.rmtree(gone)
    again = bench.main(["--tiny", "--out", str(out)])
    after = stage_times(out)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {str((gone / "stage.json").relative_to(out))}
    assert ((out / "general_cost.json").stat().st_mtime_ns, (out / "speed.json").stat().st_mtime_ns) == measured
    assert again["groups"]["in-domain"] == results["groups"]["in-domain"]

    # --report-only trains nothing and prints the same tables.
    capsys.readouterr()
    bench.main(["--tiny", "--out", str(out), "--report-only"])
    assert stage_times(out) == after
    printed = capsys.readouterr().out
    assert "## ood " in printed and "Corpus: 96 texts" in printed  # the corpus as the run counted it
    assert "only (the tasks every model has finished)" not in printed


def test_the_cost_parts_step_with_the_loops_optimizer(tmp_path, monkeypatch):
    """The plain student step of the cost measurement uses the training loop's optimizer (fused AdamW over its
    parameter groups): a plain AdamW step is several times slower on CPU, so the limit would come out low and the
    stage / limit ratio flattering. The loop itself is timed on the same batches and is what the target judges."""
    import yaml

    from multidistill.training import loop

    bench = load_bench(monkeypatch)
    out = tmp_path / "bench"
    args = bench.parse_args(["--tiny", "--out", str(out)])
    sizes = bench.sizes_of(args)
    model, data_root = bench.make_tiny_world(out / "tiny")
    qnli = out / "data" / "qnli"
    bench.write_qnli_split(data_root / "glue" / "QNLI" / "dev.tsv", qnli, sizes.qnli_dev, seed=bench.QNLI_SEED)
    (out / "mitkd.yaml").write_text(yaml.safe_dump(bench.recipe_dict(args, sizes, data_root, qnli, str(model))))
    recipe, _ = bench.load_recipes(out / "mitkd.yaml")
    root = Path(recipe.output_dir)
    shutil.copytree(model, root / "teacher-seed-1" / "model")  # any encoder folder serves as the online teacher
    (root / "general-mitkd").mkdir()
    (root / "general-mitkd" / "stage.json").write_text(json.dumps({"fingerprint": "f", "examples_per_second": 50.0}))
    made = []
    real = loop._adamw
    monkeypatch.setattr(loop, "_adamw", lambda groups, lr: made.append((groups, lr)) or real(groups, lr))

    cost = bench.general_cost(recipe, 2, 1)
    groups, lr = made[0]  # the student part's (the training loop, timed too, makes its own after it)
    assert lr == recipe.student.train.lr
    assert [g["weight_decay"] for g in groups] == [recipe.student.train.weight_decay, 0.0]
    assert cost["batches"] == 2 and cost["ratio_stage"] == pytest.approx(50.0 / cost["limit_examples_per_second"])
    # The loop on the same batches, alternating with the parts: the target's rate, measured under the same load.
    assert len(made) == 2 and len(cost["seconds"]["training loop"]) == 1
    assert cost["ratio_loop"] == pytest.approx(cost["examples_per_second"]["training loop"]
                                               / cost["limit_examples_per_second"])
    target = bench.targets({}, cost, None)[-1]
    assert target["met"] == (cost["ratio_loop"] >= 0.8) and "training loop, same batches" in target["value"]
    old = {key: value for key, value in cost.items() if key != "ratio_loop"}  # saved by an earlier version
    assert bench.targets({}, old, None)[-1]["value"].endswith("(whole stage)")


def test_the_corpus_keeps_pairs_whole_unless_single_texts_are_asked(tmp_path, monkeypatch):
    """--single-texts gives the corpus of the first acceptance run (docs/benchmarks.md), pairs split in two."""
    bench = load_bench(monkeypatch)
    for argv, kept in (([], True), (["--single-texts"], False)):
        args = bench.parse_args(["--tiny", "--out", str(tmp_path), *argv])
        recipe = bench.recipe_dict(args, bench.sizes_of(args), tmp_path, tmp_path / "qnli", "model")
        assert recipe["corpus"]["keep_pairs"] is kept


def test_the_report_says_when_a_group_average_leaves_a_task_out(monkeypatch):
    """A run not finished (or cut): the task cells of the others still show, but every average and retention of the
    group is over the tasks all models have; the report says which."""
    bench = load_bench(monkeypatch)
    rows = {model: {"tasks": {"amazon-books": {"mean": 0.5}, "amazon-dvd": {"mean": 0.7}}, "missing_runs": 0,
                    "average": 0.5, "retention": 1.0} for model in bench.MODELS}
    del rows["plain"]["tasks"]["amazon-dvd"]
    rows["plain"]["missing_runs"] = 1
    results = {"date": "d", "machine": "m", "cpus": 2, "seeds": [1], "stages": [], "targets": [],
               "data": {"corpus": None, "qnli": {"train": 1, "dev": 1}, "qnli_seed": 42, "sizes": {"teacher": 1},
                        "group_sizes": {"ood": 2000}},
               "groups": {"ood": {"tasks": ["amazon-books", "amazon-dvd"], "averaged_over": ["amazon-books"],
                                  "rows": rows}}}
    assert "Average and retention over amazon-books only" in bench.markdown(results)
    results["groups"]["ood"]["averaged_over"] = []  # no task finished by every model yet
    assert "No average or retention yet: no task has been finished by every model." in bench.markdown(results)


def test_the_wall_time_of_a_resumed_stage_counts_its_earlier_invocations(tmp_path, monkeypatch):
    """A stage's manifest times only the invocation that finished it; the earlier ones (one TensorBoard event file
    each, named by start time, last written when it stopped) are added, and the cuts counted."""
    import os

    bench = load_bench(monkeypatch)
    folder = tmp_path / "recipe" / "teacher-seed-1"
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({"seconds": 100.0, "train_seconds": 5000.0}))
    for start, stopped in ((1_000_000, 1_004_000), (1_010_000, 1_011_000), (1_020_000, 1_020_100)):
        event = folder / "tensorboard" / f"events.out.tfevents.{start}.host.{start % 97}.0"
        event.write_bytes(b"")
        os.utime(event, (stopped, stopped))
    (row,) = bench.stage_times(tmp_path, [])
    assert row["wall_seconds"] == pytest.approx(100.0 + 4000 + 1000) and row["cuts"] == 2
    assert "| teacher-seed-1 | 1 | 5100 | 5000 | - | 2 |" in bench.markdown(
        {"date": "d", "machine": "m", "cpus": 2, "seeds": [1], "stages": [row], "targets": [], "groups": {},
         "data": {"corpus": None, "qnli": {"train": 1, "dev": 1}, "qnli_seed": 42, "sizes": {"teacher": 1}}})


def test_speed_rounds_default_to_enough_for_the_throughput_target(monkeypatch):
    """3 vs 6 MiniLM layers measured 1.83-2.15x round by round on this machine around the 1.9x target: the median
    needs more than 5 rounds (each costs seconds); --tiny keeps 1."""
    bench = load_bench(monkeypatch)
    assert bench.parse_args([]).speed_rounds == 20
    assert bench.parse_args(["--tiny"]).speed_rounds == 1


def test_a_rerun_with_another_out_spelling_is_refused_before_it_writes(tmp_path, monkeypatch):
    """The recipe's output_dir is kept as --out spells it, and the general stages' settings hold the teachers' path
    built from it: a re-run spelling OUT otherwise (absolute vs relative, another working folder) would be refused
    at general-mitkd ("remove it"); it is refused first, naming both, and mitkd.yaml is left as it was."""
    import yaml

    bench = load_bench(monkeypatch)
    out = tmp_path / "bench"
    out.mkdir()
    (out / "mitkd.yaml").write_text(yaml.safe_dump({"output_dir": "runs/bench/recipe"}))
    with pytest.raises(SystemExit, match="runs/bench/recipe.*same --out spelling"):
        bench.main(["--tiny", "--out", str(out)])
    assert yaml.safe_load((out / "mitkd.yaml").read_text()) == {"output_dir": "runs/bench/recipe"}
    assert not (out / "data").exists()
