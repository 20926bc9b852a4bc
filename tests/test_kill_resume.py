"""Kill-safety, proven: SIGKILL real CLI runs at random moments (and inside write windows), resume them, and
check that nothing on disk is ever half-written and that the result equals an uncut run's.

The three chains (train-teacher, soft-targets, distill) run side by side, each in its own subprocesses; see
tests/kill_harness.py for the design and benchmarks/kill_resume.py for the same harness at acceptance size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from multidistill.utils.atomic import atomic_dir, remove_stale_temps, remove_tree, write_json
from tests.kill_harness import Kill, kill_and_resume_landed, make_world, stage_specs

PLANS = {
    # One kill of each chain is aimed at a write: a checkpoint, the store's final write, the best model.
    "train-teacher": [Kill("random"), Kill("write", r"^\.step-"), Kill("random")],
    "soft-targets": [Kill("random"), Kill("write", r"^\.signals\.tmp-")],
    "distill": [Kill("write", r"^\.model\.tmp-"), Kill("random")],
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("kill_resume")
    world = make_world(root / "world", tiny_model_dir)
    specs = stage_specs(world, epochs=1, checkpoint_every=3, eval_every=12, shard_size=16)
    with ThreadPoolExecutor(len(PLANS)) as pool:
        futures = {name: pool.submit(kill_and_resume_landed, specs[name], root / name, plan, seed=i,
                                     slow_writes=0.3, timeout=300, launcher="fork")
                   for i, (name, plan) in enumerate(PLANS.items())}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
# The three stages share one module fixture, built once: `--dist loadfile` keeps this file on one worker.
@pytest.mark.parametrize("stage", list(PLANS))
def test_killed_runs_resume_to_the_uncut_result(reports, stage):
    report = reports[stage]
    detail = [f"chains run: {report.tries}"] + [(a.kind, round(a.planned_delay, 2), round(a.seconds, 2), a.killed,
                                                 a.cut_writes) for a in report.attempts]
    assert report.kills == len(PLANS[stage]), detail
    assert report.kills_during_write >= 1, detail  # the aimed kill landed inside its write window
    assert report.unreadable == 0, [p for a in report.attempts for p in a.problems]
    assert report.max_diff <= 1e-6, report.max_diff
    if stage == "soft-targets":
        assert report.max_diff == 0.0  # the store is rebuilt bit for bit
    # Temporary folders of cut writes are cleaned by the next write beside them: none accumulate.
    assert report.leftover_temps == [], report.leftover_temps



# The atomic-write machinery the chains rely on, in process --------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has finished (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_replacing_a_folder_swaps_it_in_one_step(tmp_path):
    final = tmp_path / "model"
    for version in ("old", "new"):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text(version)
    assert (final / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .old / .tmp sibling left


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale_dir = tmp_path / f".model.tmp-{dead}-abc"
    stale_file = tmp_path / f".metrics.json.tmp-{dead}-xyz"
    live = tmp_path / f".model.tmp-{alive}-def"  # a writer still running: never touched
    other = tmp_path / f".other.tmp-{dead}-ghi"  # another name: left to its own next write
    for folder in (stale_dir, live, other):
        folder.mkdir()
    stale_file.write_text("{")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("w")
    write_json(tmp_path / "metrics.json", {"a": 1})
    assert not stale_dir.exists() and not stale_file.exists()
    assert live.exists() and other.exists()
    assert remove_stale_temps(tmp_path) == [other] and live.exists()


def test_a_swap_cut_between_its_two_renames_gets_the_old_version_back(tmp_path):
    """Where RENAME_EXCHANGE is missing the swap takes two renames; a kill between them is undone."""
    old = tmp_path / f".model.old-{_dead_pid()}"
    old.mkdir()
    (old / "weights").write_text("previous")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model"):
        raise RuntimeError  # a failed write still restores what the cut swap had moved away
    assert (tmp_path / "model" / "weights").read_text() == "previous" and not old.exists()


def test_remove_tree_never_leaves_a_half_deleted_folder(tmp_path):
    folder = tmp_path / "step-000000003"
    folder.mkdir()
    (folder / "loop_state.json").write_text("{}")
    remove_tree(folder)
    assert list(tmp_path.iterdir()) == []


def test_a_chain_is_run_again_only_when_a_planned_kill_missed(tmp_path, monkeypatch):
    """Timing misses (a run done before its kill fired) are run again; a wrong result is returned at once."""
    import tests.kill_harness as harness

    def report(kills: int, during_write: int, max_diff: float = 0.0) -> harness.ChainReport:
        return harness.ChainReport("s", kills, during_write, kills, max_diff, 0, [], 1.0, 0.5, [])

    plan = [Kill("random"), Kill("write")]
    for outcomes, tries, seeds in [
        ([report(1, 0), report(2, 0), report(2, 1)], 3, [5, 1005, 2005]),  # a missed kill, a missed write, landed
        ([report(1, 0, max_diff=0.5)], 1, [5]),  # a wrong result: never retried away
        ([report(1, 0)] * 3, 3, [5, 1005, 2005]),  # still missed after every try: the last report, for the test
    ]:
        calls = []

        def fake(spec, folder, kills, *, seed, outcomes=outcomes, calls=calls, **kwargs):
            calls.append((folder.name, seed))
            return outcomes[len(calls) - 1]

        monkeypatch.setattr(harness, "kill_and_resume", fake)
        got = harness.kill_and_resume_landed(None, tmp_path / "chain", plan, seed=5)
        assert got.tries == tries and [s for _, s in calls] == seeds
        assert [f for f, _ in calls][1:] == [f"chain-try-{i}" for i in range(2, tries + 1)]
