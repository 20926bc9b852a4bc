"""A held-out test split for the MNLI genre sample: half of each genre's dev rows, for Meta-KD on MNLI.

    python benchmarks/mnli_heldout.py [--data-root ../shared/data] [--out runs/mnli_heldout] [--seed 0]
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/metakd_amazon.py \
        --config runs/mnli_heldout/metakd_mnli_heldout.yaml --root runs/bench_metakd_mnli_heldout \
        --fractions 0.1 --domain-fraction 0.25 --speed-rounds 0 --set 'targets=[fiction,government]'

The shared MNLI sample has a train file and a dev file with genres, and no test file, so `configs/metakd_mnli.yaml`
selects every model on dev and reports dev. This script splits `mnli/dev_matched_genre_subset.tsv` into two files of
whole lines (bytes unchanged, file order kept): of each genre's n rows, a seeded half (n // 2, chosen with
``numpy.random.default_rng([seed, crc32(genre)])``) goes to `test.tsv` and the rest to `dev.tsv`. It then writes
`metakd_mnli_heldout.yaml`: `configs/metakd_mnli.yaml` with the task `mnli-genre` declared in `data.task_specs` (the
built-in spec, its train file the shared one, its dev and test files the two halves, as absolute paths) and
`report_split: test`, so that dev selects and the untouched half is scored. `manifest.json` records the source's
SHA-256, the seed and each genre's counts. Running it again with the same arguments writes the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE = "mnli/dev_matched_genre_subset.tsv"


def split_lines(lines: list[str], genre_column: int, seed: int) -> tuple[list[int], list[int], dict[str, list[int]]]:
    """The row indices (0-based, header excluded) of dev and test, in file order, and each genre's [dev, test]."""
    by_genre: dict[str, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        by_genre[line.rstrip("\r\n").split("\t")[genre_column]].append(i)
    test: set[int] = set()
    counts = {}
    for genre, rows in sorted(by_genre.items()):
        rng = np.random.default_rng([seed, zlib.crc32(genre.encode())])
        chosen = rng.choice(len(rows), size=len(rows) // 2, replace=False)
        test.update(rows[j] for j in chosen)
        counts[genre] = [len(rows) - len(chosen), len(chosen)]
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
    raw = source.read_bytes()
    header, *lines = raw.decode("utf-8").splitlines(keepends=True)
    columns = header.rstrip("\r\n").split("\t")
    if "genre" not in columns:
        raise SystemExit(f"error: {source} line 1: no 'genre' column (columns: {', '.join(columns)})")
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    dev, test, counts = split_lines(lines, columns.index("genre"), args.seed)

    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "dev.tsv", header + "".join(lines[i] for i in dev))
    write_atomic(out / "test.tsv", header + "".join(lines[i] for i in test))

    builtin = BUILTIN_TASKS["mnli-genre"]
    files = {"train": builtin.files["train"].model_copy(update={"path": str(root / builtin.files["train"].path)}),
             "dev": builtin.files["dev"].model_copy(update={"path": str(out / "dev.tsv")}),
             "test": builtin.files["dev"].model_copy(update={"path": str(out / "test.tsv")})}
    spec = builtin.model_copy(update={"files": files}).model_dump(mode="json", exclude_defaults=True)
    config = yaml.safe_load(Path(args.config).read_text())
    config["data"]["task_specs"] = [spec]
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
