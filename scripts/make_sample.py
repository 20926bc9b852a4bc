#!/usr/bin/env python
"""Build the small, seeded sample of real task data that ships inside the package.

Reads the shared data folder (default: ``<repo>/../shared/data``; see its README.md) and writes
``src/multidistill/sample_data/`` in the official file layouts, so the built-in task specs in
``multidistill.data.tasks`` read it unchanged with ``data_root`` set to the sample folder:

* ``glue/{SST-2,MRPC,CoLA,STS-B}/{train,dev}.tsv`` and ``amazon/electronics/{train,dev,test}.tsv``;
* at most 2,000 train and 500 dev/test rows per file, chosen with a fresh ``random.Random(seed)`` per
  file and written in the original file order;
* every line is copied byte for byte (no re-quoting; header kept exactly, including MRPC's UTF-8 BOM;
  CoLA has no header), and each written file ends with a newline (CoLA's dev.tsv does not in the
  original);
* a README.md with the exact command, row counts, label balance, md5s and the sources' terms.

Stdlib only and deterministic: running it twice gives identical bytes.

    python scripts/make_sample.py [--source DIR] [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "src" / "multidistill" / "sample_data"
MAX_ROWS = {"train": 2000, "dev": 500, "test": 500}


@dataclass(frozen=True)
class FileSpec:
    """One file to sample: its path (same under source and output), layout and label column."""

    task: str  # built-in task name in multidistill.data.tasks
    path: str
    header: bool
    label_col: int  # 0-based index of the label / score column
    regression: bool = False

    @property
    def split(self) -> str:
        return Path(self.path).stem


FILES: tuple[FileSpec, ...] = (
    FileSpec("sst2", "glue/SST-2/train.tsv", header=True, label_col=1),
    FileSpec("sst2", "glue/SST-2/dev.tsv", header=True, label_col=1),
    FileSpec("mrpc", "glue/MRPC/train.tsv", header=True, label_col=0),
    FileSpec("mrpc", "glue/MRPC/dev.tsv", header=True, label_col=0),
    FileSpec("cola", "glue/CoLA/train.tsv", header=False, label_col=1),
    FileSpec("cola", "glue/CoLA/dev.tsv", header=False, label_col=1),
    FileSpec("stsb", "glue/STS-B/train.tsv", header=True, label_col=9, regression=True),
    FileSpec("stsb", "glue/STS-B/dev.tsv", header=True, label_col=9, regression=True),
    FileSpec("amazon-electronics", "amazon/electronics/train.tsv", header=True, label_col=1),
    FileSpec("amazon-electronics", "amazon/electronics/dev.tsv", header=True, label_col=1),
    FileSpec("amazon-electronics", "amazon/electronics/test.tsv", header=True, label_col=1),
)


@dataclass
class Result:
    spec: FileSpec
    source_rows: int
    rows: int
    labels: list[str]
    source_md5: str
    out_md5: str
    out_bytes: int

    def balance(self) -> str:
        if self.spec.regression:
            scores = [float(x) for x in self.labels]
            return (f"score mean {sum(scores) / len(scores):.2f}, "
                    f"min {min(scores):g}, max {max(scores):g}")
        counts = Counter(self.labels)
        return " / ".join(f"{label}: {counts[label]:,}" for label in sorted(counts))


def split_lines(data: bytes) -> list[bytes]:
    """Physical lines split on ``\\n`` only, each with its ending kept (the last may lack one)."""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def sample_file(spec: FileSpec, source: Path, out: Path, seed: int) -> Result:
    src_path = source / spec.path
    data = src_path.read_bytes()
    lines = split_lines(data)
    header, rows = (lines[:1], lines[1:]) if spec.header else ([], lines)
    blank = [i for i, line in enumerate(rows) if not line.strip(b"\r\n")]
    if blank:
        raise SystemExit(f"error: {src_path} has blank lines (first at data row {blank[0] + 1}); not a GLUE file?")
    k = min(MAX_ROWS[spec.split], len(rows))
    keep = sorted(random.Random(seed).sample(range(len(rows)), k))
    chosen = [rows[i] if rows[i].endswith(b"\n") else rows[i] + b"\n" for i in keep]
    payload = b"".join(header + chosen)
    dest = out / spec.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(payload)
    labels = [line.rstrip(b"\r\n").split(b"\t")[spec.label_col].decode("utf-8").strip() for line in chosen]
    return Result(spec=spec, source_rows=len(rows), rows=k, labels=labels,
                  source_md5=hashlib.md5(data).hexdigest(), out_md5=hashlib.md5(payload).hexdigest(),
                  out_bytes=len(payload))


def command(seed: int) -> str:
    return f"python scripts/make_sample.py --seed {seed}"


README_HEAD = """\
# Embedded sample data

A small, seeded sample of **real** task data that ships inside the `multidistill` package. It is the
embedded default that the README's first command and `multidistill demo` run on, so they work offline
without downloading anything. It is **not** a benchmark: scores on these dev files are not comparable
with published GLUE / Amazon dev scores (the sampled dev sets are subsets, and the train sets are small).

The files are in the official layouts, so the built-in task specs (`multidistill.data.tasks`) read
them unchanged with `data_root` pointing at this folder:

```python
from multidistill.data.readers import read_split
from multidistill.data.sample import SAMPLE_DATA_ROOT, SAMPLE_TASKS
from multidistill.data.tasks import BUILTIN_TASKS

train = read_split(BUILTIN_TASKS["sst2"], "train", data_root=SAMPLE_DATA_ROOT)
```

Tasks: {tasks}.

## How it was made

Generated by `scripts/make_sample.py` from the shared data folder (`<repo>/../shared/data`; see its
README.md for where each file came from), with:

```
{command}
```

* At most {max_train:,} train rows and {max_dev:,} dev (and test) rows per file. Files with fewer rows are
  copied whole (MRPC dev, all Amazon electronics files).
* Rows are chosen with a fresh `random.Random({seed})` per file (`rng.sample(range(n_rows), k)`) and
  written in their original file order.
* Every line is copied **byte for byte** from the source file: no re-quoting or re-encoding. Header lines
  are kept exactly, including the UTF-8 BOM at the start of MRPC's header. CoLA has no header
  (4 columns: source, label, original-annotation mark, sentence).
* Every file ends with a newline. The original CoLA `dev.tsv` has none after its last line, so if
  that line is sampled it gains a trailing `\\n`; nothing else differs.
* Examples without an id column (SST-2, MRPC, CoLA, Amazon) get the line number as their id when read,
  so their ids are line numbers **in the sample files**, not in the originals. STS-B keeps its `index`.
* Re-running the command gives identical bytes.

## Files

| File | Rows | Of (source rows) | Labels | Size (bytes) | md5 |
|---|---|---|---|---|---|
"""

README_TAIL = """
Row counts exclude header lines. Source md5s (of the full shared files the rows were drawn from):

| File | Source md5 |
|---|---|
{source_md5s}

## Sources and licences / terms

Copied from the shared data README; see it for snapshot commits and verification details.

**GLUE** files (`glue/`): from `github.com/F0restL1n/BERT` @ `0d0288be08079531c7b3a85af3d532f9adb0f13a`
(`glue_data/<TASK>/...`, the output of the standard `download_glue_data.py`); MRPC train was rebuilt the
way `download_glue_data.py` does it (3,668 rows, official count). GLUE provides no licence of its own for
the task data; its dataset card (HF `nyu-mll/glue`, metadata `cc-by-4.0`) sends users to each source
dataset's licence:

* **SST-2**: Stanford Sentiment Treebank (Socher et al., 2013), built on Rotten Tomatoes snippets
  (Pang & Lee, 2005). No explicit licence was found in the distributed files. Research use; cite both.
* **MRPC**: Microsoft Research Paraphrase Corpus (Dolan & Brockett, 2005). Use is subject to Microsoft
  Research's licence terms for the corpus (the STS-B LICENSE.txt says the same: "researchers need to
  agree with the license terms from Microsoft Research").
* **CoLA**: Corpus of Linguistic Acceptability (Warstadt et al., 2019). No explicit licence was found.
  Sentences come from published linguistics literature; cite the paper.
* **STS-B**: scores are released under **CC BY-SA 4.0**. The text of each sub-corpus keeps its own
  licence (MSRpar/MSRvid under Microsoft terms, headlines under EMM terms, SNLI/images under CC BY-SA,
  Stack Exchange content, and so on), as set out in `STS-B/LICENSE.txt` inside the official STS-B.zip.

**Amazon multi-domain sentiment** (`amazon/electronics/`): Blitzer, Dredze & Pereira (2007),
*Biographies, Bollywood, Boom-boxes and Blenders: Domain Adaptation for Sentiment Classification* (ACL),
the `sorted_data_acl` release, from `github.com/ephyros/nlp` @ `0ce4ee4b2334f8f13e4150909f4aff08fbbf7380`.
The shared folder converted it to `text\\tlabel` (review text only, whitespace collapsed; 1 = positive,
0 = negative) and split it per domain and label with `random.Random(0)` into train 1,600 / dev 200 /
test 200; those files are copied here whole. The dataset has no formal licence: it was released by the
authors for research, and they ask users to cite Blitzer et al. (2007). The review texts are Amazon user
content.

The package's Apache-2.0 licence covers its code; these data files keep their sources' terms above.
"""


def render_readme(results: list[Result], seed: int) -> str:
    tasks = ", ".join(f"`{t}`" for t in dict.fromkeys(r.spec.task for r in results))
    head = README_HEAD.format(tasks=tasks, command=command(seed), max_train=MAX_ROWS["train"],
                              max_dev=MAX_ROWS["dev"], seed=seed)
    rows = "".join(f"| `{r.spec.path}` | {r.rows:,} | {r.source_rows:,} | {r.balance()} | {r.out_bytes:,} | "
                   f"`{r.out_md5}` |\n" for r in results)
    total = sum(r.out_bytes for r in results)
    rows += f"| **total** | {sum(r.rows for r in results):,} | | | {total:,} | |\n"
    source_md5s = "\n".join(f"| `{r.spec.path}` | `{r.source_md5}` |" for r in results)
    return head + rows + README_TAIL.format(source_md5s=source_md5s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"shared data folder (default: {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="random.Random seed, fresh per file (default: 0)")
    args = parser.parse_args(argv)

    missing = [spec.path for spec in FILES if not (args.source / spec.path).is_file()]
    if missing:
        print(f"error: {args.source} lacks {', '.join(missing)}; pass --source DIR", file=sys.stderr)
        return 2
    results = [sample_file(spec, args.source, args.out, args.seed) for spec in FILES]
    (args.out / "README.md").write_text(render_readme(results, args.seed), encoding="utf-8", newline="\n")

    width = max(len(r.spec.path) for r in results)
    print(f"{'file':<{width}}  {'rows':>5}  {'of':>6}  labels")
    for r in results:
        print(f"{r.spec.path:<{width}}  {r.rows:>5}  {r.source_rows:>6}  {r.balance()}")
    total = sum(r.out_bytes for r in results)
    print(f"wrote {len(results)} files + README.md to {args.out} ({total / 1e6:.2f} MB of TSV)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
