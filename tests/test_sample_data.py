"""Tests for the embedded sample data (`multidistill.data.sample`, built by `scripts/make_sample.py`)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from multidistill.data.readers import read_split
from multidistill.data.sample import SAMPLE_DATA_ROOT, SAMPLE_TASKS
from multidistill.data.tasks import BUILTIN_TASKS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_sample.py"

# (task, split) -> rows in the sample: min(2,000 train / 500 dev, rows in the full file).
EXPECTED_ROWS = {
    ("sst2", "train"): 2000, ("sst2", "dev"): 500,
    ("mrpc", "train"): 2000, ("mrpc", "dev"): 408,
    ("cola", "train"): 2000, ("cola", "dev"): 500,
    ("stsb", "train"): 2000, ("stsb", "dev"): 500,
    ("amazon-electronics", "train"): 1600, ("amazon-electronics", "dev"): 200,
    ("amazon-electronics", "test"): 200,
}


def sample_files() -> list[str]:
    """Relative paths of every sample data file, from the built-in specs of the sample tasks."""
    return [f.path for name in SAMPLE_TASKS for f in BUILTIN_TASKS[name].files.values()]




def test_sample_tasks_cover_exactly_the_expected_splits() -> None:
    assert SAMPLE_DATA_ROOT.is_dir()
    assert (SAMPLE_DATA_ROOT / "README.md").is_file()
    assert {(name, split) for name in SAMPLE_TASKS for split in BUILTIN_TASKS[name].files} == set(EXPECTED_ROWS)
    for rel in sample_files():
        assert (SAMPLE_DATA_ROOT / rel).is_file(), rel
    total = sum(p.stat().st_size for p in SAMPLE_DATA_ROOT.rglob("*") if p.is_file())
    assert total < 4_000_000  # a few MB at most: it ships in every wheel


@pytest.mark.parametrize(("task_name", "split"), sorted(EXPECTED_ROWS))
def test_builtin_specs_read_the_sample(task_name: str, split: str) -> None:
    task = BUILTIN_TASKS[task_name]
    ds = read_split(task, split, data_root=SAMPLE_DATA_ROOT)
    assert len(ds) == EXPECTED_ROWS[(task_name, split)]
    assert len(ds) <= (2000 if split == "train" else 500)
    ids = ds["id"]
    assert len(set(ids)) == len(ids)
    assert all(text.strip() for text in ds["text_a"])
    if task.pair:
        assert all(text.strip() for text in ds["text_b"])
    labels = ds["label"]
    if task.type == "regression":
        assert all(math.isfinite(y) and 0.0 <= y <= 5.0 for y in labels)
        assert max(labels) - min(labels) > 4  # the sample spans the score range
    else:
        counts = Counter(labels)
        assert set(counts) == set(range(task.num_labels))  # every class present, no -1 (unlabelled)
    if task_name == "amazon-electronics":
        assert set(ds["domain"]) == {"electronics"}
        assert Counter(labels) == {0: len(ds) // 2, 1: len(ds) // 2}


@pytest.mark.parametrize("rel", sample_files())
def test_layout_header_and_newlines(rel: str) -> None:
    data = (SAMPLE_DATA_ROOT / rel).read_bytes()
    assert data.endswith(b"\n")
    assert b"\r" not in data
    lines = data.split(b"\n")[:-1]
    assert all(lines)  # no blank lines
    first = lines[0]
    if "MRPC" in rel:
        assert first == b"\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    elif "CoLA" in rel:  # headerless: source, label, original mark, sentence
        assert all(len(line.split(b"\t")) == 4 for line in lines)
        assert first.split(b"\t")[1] in (b"0", b"1")
    elif "STS-B" in rel:
        assert first.split(b"\t") == [b"index", b"genre", b"filename", b"year", b"old_index", b"source1",
                                      b"source2", b"sentence1", b"sentence2", b"score"]
    elif "SST-2" in rel:
        assert first == b"sentence\tlabel"
    else:
        assert first == b"text\tlabel"


@pytest.mark.parametrize("rel", sample_files())
def test_rows_are_verbatim_source_lines_in_order(shared_data: Path, rel: str) -> None:
    source = (shared_data / rel).read_bytes().split(b"\n")
    if source[-1] == b"":
        source.pop()  # a final newline, not an empty last line (CoLA dev.tsv has none)
    sample = (SAMPLE_DATA_ROOT / rel).read_bytes().split(b"\n")
    assert sample.pop() == b""
    header = "CoLA" not in rel
    if header:
        assert sample[0] == source[0]
        sample, source = sample[1:], source[1:]
    # Order-preserving subsequence of the source lines (so every line exists verbatim, in file order).
    remaining = iter(source)
    missing = [line for line in sample if not any(line == src for src in remaining)]
    assert not missing, f"{len(missing)} lines not found in order in the shared file, e.g. {missing[0][:80]!r}"
    if len(sample) == len(source):
        assert sample == source


def test_script_reproduces_identical_bytes(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample"
    result = subprocess.run([sys.executable, str(SCRIPT), "--source", str(shared_data), "--out", str(out)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "glue/SST-2/train.tsv" in result.stdout
    made = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    shipped = {p.relative_to(SAMPLE_DATA_ROOT).as_posix(): p.read_bytes()
               for p in SAMPLE_DATA_ROOT.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(made) == sorted(shipped) == sorted([*sample_files(), "README.md"])
    for rel, data in made.items():
        assert data == shipped[rel], f"{rel} differs from the shipped sample; re-run scripts/make_sample.py"


def test_pkg_path_of_shipped_configs_is_the_sample_root() -> None:
    from multidistill.utils.paths import resolve_path

    assert Path(resolve_path("pkg:multidistill/sample_data")).resolve() == SAMPLE_DATA_ROOT
