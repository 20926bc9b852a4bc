"""The embedded sample of real task data that ships inside the package.

`SAMPLE_DATA_ROOT` is a folder of small, seeded subsets of real GLUE (SST-2, MRPC, CoLA, STS-B) and Amazon
electronics files in their official layouts (``glue/<TASK>/{train,dev}.tsv``,
``amazon/electronics/{train,dev,test}.tsv``): at most 2,000 train and 500 dev rows per task, lines copied
byte for byte from the originals. The built-in task specs read it unchanged::

    read_split(BUILTIN_TASKS["sst2"], "train", data_root=SAMPLE_DATA_ROOT)

It is the embedded default the README's first command and ``multidistill demo`` run on. It was built by
``scripts/make_sample.py``; ``sample_data/README.md`` lists row counts, label balance, sources and the
sources' licences / terms (MRPC: Microsoft Research licence terms; Amazon: research use, cite Blitzer et
al. 2007). It is for trying the library out and for tests, not for benchmarking.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DATA_ROOT: Path = Path(__file__).resolve().parent.parent / "sample_data"
"""Folder holding the sample files; pass it as ``data_root``."""

SAMPLE_ROOT_SPEC = "pkg:multidistill/sample_data"
"""`SAMPLE_DATA_ROOT` as a config's ``data.data_root`` writes it (found in the installed package)."""

SAMPLE_TASKS: list[str] = ["sst2", "mrpc", "cola", "stsb", "amazon-electronics"]
"""Built-in task names (keys of `BUILTIN_TASKS`) whose files the sample holds, every configured split."""
