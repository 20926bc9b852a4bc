"""How much resident memory one random row read from a memory-mapped Arrow file costs on this machine.

    python benchmarks/mapped_read_probe.py [--dir runs] [--rows 12000000]

Writes an int64 column (96 MB for 12M rows) as an Arrow stream into --dir (same filesystem as the caches),
maps it as `datasets` does (`pyarrow.memory_map`), and prints how much the process's file-backed resident
memory (RssFile) grows after 1, 1, 1, 10 and 100 random single-row reads. On a kernel that maps whole large
page-cache folios on a fault, one 8-byte read can make megabytes resident, so random training reads touch
the whole file after a few steps whatever the row count: the reason training reads its rows with positional
reads instead (`multidistill.data.rows.ArrowRows`), whose same reads are printed after (docs/benchmarks.md,
"Scale").
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import pyarrow as pa


def rss_file_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("runs"))
    parser.add_argument("--rows", type=int, default=12_000_000)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "mapped_read_probe.arrow"
    try:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("x", pa.int64())])) as writer:
            writer.write_table(pa.table({"x": np.arange(args.rows, dtype=np.int64)}))
        column = pa.ipc.open_stream(pa.memory_map(str(path))).read_all().column("x").chunks[0]
        rng = np.random.default_rng(0)
        print(f"kernel {platform.release()}; file {path.stat().st_size / 2**20:.0f} MiB")
        for reads in (1, 1, 1, 10, 100):
            before = rss_file_kib()
            for index in rng.integers(0, args.rows, reads):
                column[int(index)].as_py()
            print(f"{reads:>4} random row reads: RssFile +{(rss_file_kib() - before) / 1024:.1f} MiB")
        from multidistill.data.rows import ArrowRows

        rows = ArrowRows([path])
        for reads in (1, 1, 1, 10, 100, 10_000):
            before = rss_file_kib()
            rows[rng.integers(0, args.rows, reads)]
            print(f"{reads:>5} random rows by ArrowRows (pread): RssFile +{(rss_file_kib() - before) / 1024:.1f} MiB")
    finally:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
