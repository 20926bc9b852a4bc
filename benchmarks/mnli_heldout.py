"""A held-out test split for the MNLI genre sample: half of each genre's dev rows, for Meta-KD on MNLI.

    python benchmarks/mnli_heldout.py [--data-root ../shared/data] [--out runs/mnli_heldout] [--seed 0]
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/metakd_amazon.py \
        --config runs/mnli_heldout/metakd_mnli_heldout.yaml --root runs/bench_metakd_mnli_heldout \
        --fractions 0.1 --domain-fraction 0.25 --speed-rounds 0 --set 'targets=[fiction,government]'

The shared MNLI sample has a train file and a dev file with genres, and no test file, so `configs/metakd_mnli.yaml`
selects every model on dev and reports dev. This script splits `mnli/dev_matched_genre_subset.tsv` into two files of
whole lines (bytes unchanged, file order kept; lines end at "\\n" as the project reads them): of each genre's n rows,
a seeded half (n // 2, chosen with ``numpy.random.default_rng([seed, crc32(genre)])``) goes to `test.tsv` and the rest
to `dev.tsv`; rows equal but for their id stay together. It then writes
`metakd_mnli_heldout.yaml`: `configs/metakd_mnli.yaml` with the task `mnli-genre` declared in `data.task_specs` (the
built-in spec, its train file the shared one, its dev and test files the two halves, as absolute paths) and
`report_split: test`, so that dev selects and the untouched half is scored. `manifest.json` records the source's
SHA-256, the seed and each genre's counts. Running it again with the same arguments writes the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE = "mnli/dev_matched_genre_subset.tsv"


def split_lines(lines: list[str], genre_column: int, seed: int, id_column: int | None = None
                ) -> tuple[list[int], list[int], dict[str, list[int]]]:
    """The row indices (0-based, header excluded) of dev and test, in file order, and each genre's [dev, test] rows.

    Of each genre's n rows, n // 2 are drawn for test. Rows whose cells other than the id are equal (the sample has
    one such pair, indices 1439 and 8015) then join the half of the first of them, so no test row is also a dev
    row (the sample's pair was drawn into one half already: its split is the plain draw's)."""
    by_genre: dict[str, list[int]] = defaultdict(list)
    first: dict[tuple, int] = {}
    twin_of: dict[int, int] = {}
    for i, line in enumerate(lines):
        cells = line.rstrip("\r\n").split("\t")
        by_genre[cells[genre_column]].append(i)
        content = tuple(cell for k, cell in enumerate(cells) if k != id_column)
        twin_of[i] = first.setdefault(content, i)
    test: set[int] = set()
    for genre, rows in sorted(by_genre.items()):
        if len(rows) < 2:
            raise SystemExit(f"error: genre {genre!r} has {len(rows)} row(s); halving it needs two")
        rng = np.random.default_rng([seed, zlib.crc32(genre.encode())])
        test.update(rows[j] for j in rng.choice(len(rows), size=len(rows) // 2, replace=False))
    test = {i for i in range(len(lines)) if twin_of[i] in test}
    counts = {genre: [sum(i not in test for i in rows), sum(i in test for i in rows)]
              for genre, rows in sorted(by_genre.items())}
    dev = [i for i in range(len(lines)) if i not in test]
    return dev, sorted(test), counts


def write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8", newline="")
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/data", help="folder holding mnli/ (the shared data)")
    parser.add_argument("--out", default="runs/mnli_heldout", help="folder for dev.tsv, test.tsv and the config")
    parser.add_argument("--seed", type=int, default=0, help="seed of each genre's test half")
    parser.add_argument("--config", default=str(REPO / "configs/metakd_mnli.yaml"), help="the config to adapt")
    args = parser.parse_args()

    from multidistill.data.tasks import BUILTIN_TASKS

    root = Path(args.data_root).expanduser().resolve()
    source = root / SOURCE
    if not source.is_file():
        raise SystemExit(f"error: {source} not found; --data-root must hold {SOURCE} (docs/data.md)")
    builtin = BUILTIN_TASKS["mnli-genre"]
    genre, row_id = builtin.files["dev"].columns.domain, builtin.files["dev"].columns.id
    raw = source.read_bytes()
    # Lines end at "\n" only, as the project's reader reads them (str.splitlines would also break at U+2028, ...).
    header, *lines = [line.decode("utf-8") for line in io.BytesIO(raw).readlines()]
    columns = [name.strip() for name in header.rstrip("\r\n").split("\t")]
    if genre not in columns:
        raise SystemExit(f"error: {source} line 1: no {genre!r} column (columns: {', '.join(columns)})")
    numbered = [(n, line) for n, line in enumerate(lines, start=2) if line.strip()]  # blank lines: read as none
    for n, line in numbered:
        if len(line.rstrip("\r\n").split("\t")) != len(columns):
            raise SystemExit(f"error: {source} line {n}: {len(line.rstrip(chr(13) + chr(10)).split(chr(9)))} "
                             f"tab-separated cells, the header has {len(columns)}")
    lines = [line for _, line in numbered]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\r\n" if header.endswith("\r\n") else "\n"
    dev, test, counts = split_lines(lines, columns.index(genre), args.seed,
                                    columns.index(row_id) if row_id in columns else None)

    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "dev.tsv", header + "".join(lines[i] for i in dev))
    write_atomic(out / "test.tsv", header + "".join(lines[i] for i in test))

    files = {"train": builtin.files["train"].model_copy(update={"path": str(root / builtin.files["train"].path)}),
             "dev": builtin.files["dev"].model_copy(update={"path": str(out / "dev.tsv")}),
             "test": builtin.files["dev"].model_copy(update={"path": str(out / "test.tsv")})}
    spec = builtin.model_copy(update={"files": files}).model_dump(mode="json", exclude_defaults=True)
    config = yaml.safe_load(Path(args.config).read_text())
    config["data"]["task_specs"] = [spec]
    config["data"]["data_root"] = str(root)
    config["report_split"] = "test"
    config["output_dir"] = "runs/metakd_mnli_heldout"
    note = (f"# Made by benchmarks/mnli_heldout.py --seed {args.seed} from {args.config}: dev selects (half of each "
            f"genre's dev rows), test (the other half) is reported.\n")
    write_atomic(out / "metakd_mnli_heldout.yaml", note + yaml.safe_dump(config, sort_keys=False, width=120))
    manifest = {"source": str(source), "sha256": hashlib.sha256(raw).hexdigest(), "seed": args.seed,
                "genres": {g: {"dev": d, "test": t} for g, (d, t) in counts.items()},
                "rows": {"dev": len(dev), "test": len(test)}}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["genres"]), f"dev {len(dev)}, test {len(test)} rows -> {out}")


if __name__ == "__main__":
    main()
