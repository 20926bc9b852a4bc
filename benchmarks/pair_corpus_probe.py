"""The corpus of issue 12's probe (3) in docs/benchmarks.md, as it was made before `keep_pairs` existed.

    HF_HUB_OFFLINE=1 python benchmarks/pair_corpus_probe.py runs/bench_mitkd/mitkd.yaml runs/pair_corpus.txt

Writes one line a training row of the recipe's six tasks, read by the package's readers: a single-text task's
text, or a pair task's ``text_a [SEP] text_b`` (the tokenizer reads ``[SEP]`` as the separator; the second segment
keeps token type 0). Exact duplicates are dropped, the first kept. Prints the count of texts and of pairs. The
product's way to the same corpus is a task reference with ``keep_pairs: true`` (docs/data.md), which also gives
the second text its token type.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TASKS = ("sst2", "mrpc", "cola", "stsb", "qnli-split", "mnli-genre")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    from multidistill.data.readers import split_batches
    from multidistill.data.tasks import get_task
    from multidistill.recipes import load_recipe
    from multidistill.utils.atomic import atomic_file

    recipe = load_recipe(args.recipe, [])
    declared = {spec.name: spec for spec in recipe.data.task_specs}
    seen, lines, pairs = set(), [], 0
    for name in TASKS:
        task = get_task(name, declared)
        for batch in split_batches(task, "train", recipe.data.data_root):
            texts_a = batch.column("text_a").to_pylist()
            texts_b = batch.column("text_b").to_pylist() if task.pair else [None] * len(texts_a)
            for text_a, text_b in zip(texts_a, texts_b, strict=True):
                line = (text_a if text_b is None else f"{text_a} [SEP] {text_b}").replace("\n", " ")
                if line.strip() and line not in seen:
                    seen.add(line)
                    lines.append(line)
                    pairs += text_b is not None
    with atomic_file(args.out) as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"{len(lines)} texts, {pairs} pairs -> {args.out}")


if __name__ == "__main__":
    main()
