"""Declarative task specs and the registry of built-in tasks (GLUE, Amazon domains, MNLI genres)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from multidistill.errors import UnknownTaskError
from multidistill.limits import MAX_SEED
from multidistill.utils.paths import NAME_CHARACTERS, check_name

TaskType = Literal["classification", "multilabel", "regression", "text"]
# The metrics each labelled task type can be scored with (`evaluation.metrics.METRICS` computes them).
TASK_METRICS: dict[str, tuple[str, ...]] = {"classification": ("accuracy", "f1", "macro_f1", "matthews"),
                                            "multilabel": ("micro_f1", "macro_f1", "samples_f1", "exact_match"),
                                            "regression": ("pearson", "spearman")}
# A multilabel row's label set is stored as one int64 bit mask (bit i: labels[i]), so every row-level path (caches,
# stores, samplers) keeps one scalar label; bit 63 is the sign, and -1 marks a row without a label.
MAX_MULTILABELS = 63
FileFormat = Literal["tsv", "csv", "jsonl", "hf_disk", "hf_hub", "txt"]
Split = Literal["train", "dev", "test"]
SPLITS: tuple[str, ...] = ("train", "dev", "test")
AMAZON_DOMAINS: tuple[str, ...] = ("books", "dvd", "electronics")  # the built-in `amazon` task's domains
MNLI_GENRES: tuple[str, ...] = ("fiction", "government", "slate", "telephone", "travel")


class Columns(BaseModel):
    """Where each example field lives in a source file: a column name, or a 0-based index for
    files without a header (CoLA)."""

    model_config = ConfigDict(extra="forbid")

    text_a: str | int = Field(description="Column holding the first (or only) text.")
    text_b: str | int | None = Field(None, description="Column holding the second text of a pair task.")
    label: str | int | None = Field(None, description="Column holding the gold label (absent for unlabelled text).")
    id: str | int | None = Field(None, description="Column with a stable example id; the line number if absent.")
    domain: str | int | None = Field(None, description="Column with the example's domain (e.g. MNLI genre).")

    @model_validator(mode="after")
    def _distinct(self) -> Columns:
        # One column read as two fields: a label read as text would leak the answer into the input.
        seen: dict[str | int, str] = {}
        for field in ("text_a", "text_b", "label", "domain"):
            column = getattr(self, field)
            if column is None:
                continue
            if column in seen:
                raise ValueError(f"columns.{seen[column]} and columns.{field} both read column {column!r}; each "
                                 "field needs its own column")
            seen[column] = field
        return self


class DataFile(BaseModel):
    """One split's source: a file (or saved/hub dataset) with its format and column map."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path, a `save_to_disk` folder, or a hub dataset name; "
                      "relative paths resolve against the data root.")
    format: FileFormat = Field("tsv", description="tsv | csv | jsonl | hf_disk | hf_hub | txt (one text a line).")
    header: bool = Field(True, description="Whether a tsv/csv file starts with a header line.")
    columns: Columns = Field(description="Column map from source columns to example fields (a txt file has one "
                             "column, 0, the default there).")
    hf_name: str | None = Field(None, description="Config name for `load_dataset(path, hf_name)` (hf_hub).")
    hf_split: str | None = Field(None, description="Split name inside a Hugging Face dataset (e.g. validation).")

    @field_validator("path", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, PurePath) else value  # `path=Path(...)` from Python
    int_label_names: list[str] | None = Field(
        None, description="For integer labels in a HF dataset: the task label each index stands for (without it, a "
        "ClassLabel column's own names, else positions in the task's labels)."
    )
    int_labels: Literal["positions", "values"] | None = Field(
        None, description="hf_disk / hf_hub, a plain integer label column (no ClassLabel): positions reads an "
        "integer as an index into int_label_names, else into the task's labels; values reads it as the label it "
        "spells (5 is the label '5'), as a jsonl file is read. Left out: positions, but refused as ambiguous when "
        "a task label spells an integer other than its own position (labels ['1', ..., '5'] or ['1', '0']).")
    domain: str | None = Field(None, description="Domain of every row of this file (Amazon domains).")
    quoting: Literal["none", "csv"] = Field(
        "none", description="tsv only: none splits on tabs and keeps every quote (GLUE's text has stray quotes); csv "
        "reads CSV-style quoted fields, as pandas' to_csv(sep='\\t') writes them.")
    label_separator: str = Field(",", min_length=1, description="Multilabel only: what joins the labels of one "
                                 "text cell (tsv, csv: 'joy,love'); a cell may also hold a JSON list "
                                 "('[\"joy\", \"love\"]', '[]' for none of the labels). jsonl and Hugging Face "
                                 "datasets hold lists.")
    no_label_value: float | None = Field(
        None, description="Regression only: a score that marks a row without one (e.g. -1 in GLUE's STS-B test split "
        "on the hub); such rows are unlabelled, as a NaN score always is.")

    @model_validator(mode="before")
    @classmethod
    def _txt_columns(cls, data: Any) -> Any:
        # A txt file's only column is the line itself: the column map may be left out.
        if isinstance(data, dict) and data.get("format") == "txt" and data.get("columns") is None:
            return {**data, "columns": {"text_a": 0}}
        return data

    @model_validator(mode="after")
    def _check_txt(self) -> DataFile:
        if self.int_labels is not None and self.format not in ("hf_disk", "hf_hub"):
            raise ValueError(f"'{self.path}': int_labels is for hf_disk / hf_hub integer columns (a {self.format} "
                             "label is always read as the text it holds); remove it")
        if self.int_labels == "values" and self.int_label_names is not None:
            raise ValueError(f"'{self.path}': int_label_names reads integers as positions, int_labels: values as "
                             "the labels they spell; set one of the two")
        if self.quoting != "none" and self.format != "tsv":
            raise ValueError(f"'{self.path}': quoting is a tsv setting (csv is always read with quotes); remove it")
        if self.format == "txt":
            cols = self.columns
            if cols.text_a != 0 or any(getattr(cols, f) is not None for f in ("text_b", "label", "id", "domain")):
                raise ValueError(f"'{self.path}': a txt file holds one text a line and nothing else; leave "
                                 "columns out (text_a is column 0, ids are line numbers), or use jsonl/csv/tsv")
        return self


class HeldOutFromDev(BaseModel):
    """A test split carved out of a task's dev rows (`Task.test_from_dev`): for data whose only labelled evaluation
    split is dev (GLUE's test labels are hidden), so that dev selects the models and rows nothing selected on score
    them. `multidistill.data.dev_test` draws the rows."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.5, gt=0, lt=1, description="Share of each domain's dev rows (of the whole dev split, "
                            "for a task without domains) that become the test split: floor(fraction x rows), "
                            "drawn with numpy.random.default_rng([seed, crc32(domain)]). Rows equal but for their "
                            "id join the part of the first of them. The rest stay dev.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the draw. It is not the training seed: every run "
                      "of the task, whatever its seed, selects on the same dev rows and is scored on the same test "
                      "rows.")

    @field_validator("fraction", "seed", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:  # pydantic reads true as 1: in YAML most often an unquoted yes
        if isinstance(value, bool):
            raise ValueError(f"takes a number, not {str(value).lower()}")
        return value


class Task(BaseModel):
    """A task: what it predicts, how it is scored and where its data lives."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"Unique task name; used for the head, in metrics and as a folder name in caches "
                      f"and signal stores, so it must match `{NAME_CHARACTERS}` (at most 100 characters) and hold "
                      "no '.' (it names the task's head, a PyTorch module).")
    type: TaskType = Field("classification", description="classification (one label a row), multilabel (a set "
                           "of labels a row, each scored on its own: sigmoid outputs, at most 63 labels), "
                           "regression, or text (an unlabelled corpus for general distillation).")
    labels: list[str] = Field(default_factory=list, description="Label values as they appear in the data, "
                              "in head-output order (classification and multilabel only); not empty, and no white "
                              "space around them for text files (their cells are stripped before they are matched).")
    pair: bool = Field(False, description="True if examples have two texts (text_a, text_b).")
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"],
                               description="Metrics to report; the first one is the task's main score. "
                               "classification: accuracy, f1 (2 labels: the F1 of labels[1], the second label, "
                               "whatever its name), macro_f1 (the mean F1 over the classes the scored rows "
                               "hold, the same for every model), matthews (default accuracy); "
                               "multilabel (a label is predicted where its probability is over 0.5, or over its "
                               "own threshold where train.thresholds: per_label saved one): micro_f1 "
                               "(over every row-label decision), macro_f1 (the mean F1 over the labels the scored "
                               "rows hold), samples_f1 (the mean of each row's F1), exact_match (the share of rows "
                               "whose whole set is right) (default micro_f1, macro_f1); "
                               "regression: pearson, spearman (default both).")
    domain: str | None = Field(None, description="Optional domain tag of the whole task (kept in the rows' "
                               "`domain` column; it does not give the task domains: see `domains`).")
    files: dict[Split, DataFile] = Field(default_factory=dict, description="Data file per split.")
    domain_files: dict[str, dict[Split, DataFile]] = Field(
        default_factory=dict, description="One file set per domain instead of `files`: domain name -> data file "
        "per split (e.g. books: {train: ..., dev: ..., test: ...}). Every row of a domain's files has that domain; "
        "ids become `<domain>:<id>` so they stay unique across the domains' files.")
    domains: tuple[str, ...] = Field(
        (), description="The task's domain names, sorted; a row's domain id is its index here. Set from "
        "domain_files; for a mapped `columns.domain` either declared here (rows with another value are refused) or "
        "left out and read from the data (every split's distinct values). Empty: the task has no domains.")
    from_tasks: list[str] = Field(default_factory=list, description="text tasks only: the training split is the "
                                  "texts of these tasks' training splits (both texts of a pair task), labels "
                                  "dropped, exact duplicates removed (the first occurrence is kept).")
    keep_pairs: bool = Field(False, description="from_tasks only: a pair task's two texts stay one example, "
                             "tokenised as a pair as its own rows are (false: each text is an example of its own). "
                             "Set it when the student will be fine-tuned on pair tasks: their cross-text attention "
                             "is then distilled too (docs/recipes/mitkd.md).")
    sources: list[Task] = Field(default_factory=list, description="The specs of from_tasks, filled in when the "
                                "task is looked up (`get_task`); not set by hand.")
    test_from_dev: HeldOutFromDev | None = Field(
        None, description="Carve the test split out of the dev rows (for a task with dev files but no test files): "
        "a seeded share of them becomes test, the rest stays dev. Set it here or with data.test_from_dev.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        check_name(name, "task name")
        if "." in name:  # a head is the PyTorch module `heads.<name>`, and module names cannot hold a '.'
            raise ValueError(f"task name {name!r} holds a '.', which PyTorch module names (the task's head) cannot; "
                             f"use '_' or '-' instead (e.g. {name.replace('.', '_')!r})")
        return name

    @model_validator(mode="after")
    def _check(self) -> Task:
        if self.type == "text":
            self._check_text()
        elif self.from_tasks:
            raise ValueError(f"task '{self.name}': from_tasks is for text tasks (type: text) only")
        if self.keep_pairs and not self.from_tasks:
            raise ValueError(f"task '{self.name}': keep_pairs is for text tasks built from_tasks only; remove it")
        if self.type == "classification" and len(self.labels) < 2:
            raise ValueError(f"task '{self.name}': a classification task needs at least 2 labels")
        if self.type == "multilabel" and not 2 <= len(self.labels) <= MAX_MULTILABELS:
            raise ValueError(f"task '{self.name}': a multilabel task needs 2 to {MAX_MULTILABELS} labels, it has "
                             f"{len(self.labels)}")
        if self.type == "regression" and self.labels:
            raise ValueError(f"task '{self.name}': a regression task takes no labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task '{self.name}': duplicate labels {self.labels}")
        self._check_label_names()
        if self.type == "regression" and "metrics" not in self.model_fields_set:
            self.metrics = list(TASK_METRICS["regression"])  # accuracy, the field's default, cannot score a score
        if self.type == "multilabel" and "metrics" not in self.model_fields_set:
            self.metrics = ["micro_f1", "macro_f1"]  # accuracy (the field's default) is for one label a row
        if self.type != "text":
            self._check_metrics()
        self._check_domains()
        self._check_test_from_dev()
        self._infer_pair()
        for where, data_file in self.all_files():
            if self.pair and data_file.columns.text_b is None:
                raise ValueError(f"task '{self.name}': pair task but {where}.columns.text_b is not set")
            if data_file.no_label_value is not None and self.type != "regression":
                raise ValueError(f"task '{self.name}': {where}.no_label_value is for regression scores only; "
                                 "remove it")
            if data_file.label_separator != "," and self.type != "multilabel":
                raise ValueError(f"task '{self.name}': {where}.label_separator is for multilabel tasks only; "
                                 "remove it")
            if self.type == "multilabel" and data_file.format != "txt":
                joined = [label for label in self.labels if data_file.label_separator in label]
                if joined:
                    raise ValueError(f"task '{self.name}': label {joined[0]!r} holds {where}.label_separator "
                                     f"{data_file.label_separator!r}, so a cell could not be split into labels; set "
                                     "another label_separator")
                bracketed = [label for label in self.labels if label.startswith("[")]
                if bracketed:
                    raise ValueError(f"task '{self.name}': label {bracketed[0]!r} starts with '[', which a label "
                                     "cell reads as the start of a JSON list; rename the label")
            for key in ("int_labels", "int_label_names"):  # they map class indices: a score would ignore them
                if getattr(data_file, key) is not None and self.type not in ("classification", "multilabel"):
                    raise ValueError(f"task '{self.name}': {where}.{key} is for class labels only; remove it")
        return self

    def _check_label_names(self) -> None:
        """Data cells are stripped before they are matched against the labels, and an empty cell is a missing
        label: a label with spaces around it (in a task read from text files), or an empty one, could never be any
        row's."""
        for i, label in enumerate(self.labels):
            if not label.strip():
                raise ValueError(f"task '{self.name}': labels.{i} is {label!r}, an empty label; an empty label cell "
                                 "is a missing label, so no row could have it; give the class a name")
            if label != label.strip() and self._reads_text_cells():
                raise ValueError(f"task '{self.name}': labels.{i} is {label!r}, with white space around it; label "
                                 "cells are stripped before they are matched, so no row could have it; write "
                                 f"{label.strip()!r} (a ClassLabel name with spaces is mapped by int_label_names)")

    def _reads_text_cells(self) -> bool:
        """Whether some file of the task holds labels as text cells (stripped when read); an HF dataset's ClassLabel
        names and integer positions are read as they are, so a label with spaces around it can match them. A spec
        with no files (a saved model's) is not checked: the files it was read from did match."""
        files = [f for split_files in ([self.files] if self.files else []) + list((self.domain_files or {}).values())
                 for f in split_files.values()]
        return any(f.format not in ("hf_disk", "hf_hub") for f in files)

    def _check_metrics(self) -> None:
        """Metrics the task's type can be scored with (evaluation.metrics computes them), known before training."""
        if not self.metrics:
            raise ValueError(f"task '{self.name}': metrics is empty; give at least one (the first is the main score)")
        fits = TASK_METRICS[self.type]
        for name in self.metrics:
            if name not in fits:
                other = [kind for kind, names in TASK_METRICS.items() if name in names]
                why = f"a {other[0]} metric" if other else "not a metric"
                raise ValueError(f"task '{self.name}': metric '{name}' is {why}; a {self.type} task takes "
                                 f"{', '.join(fits)}")
        if "f1" in self.metrics and len(self.labels) != 2:
            raise ValueError(f"task '{self.name}': metric 'f1' is the F1 of the second label (the positive class) "
                             f"of a 2-label task, this task has {len(self.labels)} labels; use macro_f1")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"task '{self.name}': duplicate metrics {self.metrics}")

    def _check_domains(self) -> None:
        """domain_files and a domain column are two ways of giving rows a domain: one at a time, and `domains`
        agrees with them (see the field descriptions)."""
        column = [where for where, data_file in self.all_files() if data_file.columns.domain is not None]
        if self.domain_files:
            if self.files:
                raise ValueError(f"task '{self.name}': give either files or domain_files (one file set per "
                                 "domain), not both")
            if column:
                raise ValueError(f"task '{self.name}': {column[0]}.columns.domain is mapped, but domain_files "
                                 "already names each file's domain; remove the column mapping")
            if any(not name.strip() for name in self.domain_files):
                raise ValueError(f"task '{self.name}': domain_files has an empty domain name")
            if "domains" in self.model_fields_set and list(self.domains) != sorted(self.domain_files):
                raise ValueError(f"task '{self.name}': domains {list(self.domains)} disagree with domain_files "
                                 f"{sorted(self.domain_files)}; leave domains out")
            self.domains = tuple(sorted(self.domain_files))
        elif self.domains and not column:
            raise ValueError(f"task '{self.name}': domains are listed but no file maps columns.domain; map the "
                             "column that holds each row's domain, or use domain_files")
        if self.domains:
            if len(set(self.domains)) != len(self.domains) or any(not d.strip() for d in self.domains):
                raise ValueError(f"task '{self.name}': domains {list(self.domains)} must be distinct, non-empty names")
            self.domains = tuple(sorted(self.domains))
        if (self.domain_files or self.domains) and self.type == "text":
            raise ValueError(f"task '{self.name}': a text task has no domains (a mapped columns.domain stays a "
                             "tag); remove domain_files / domains")

    def _check_test_from_dev(self) -> None:
        """A carved test split needs dev files to carve it from and no test files it would shadow."""
        if self.test_from_dev is None:
            return
        if self.type == "text":
            raise ValueError(f"task '{self.name}': a text task is not evaluated, so it has no test split to carve; "
                             "remove test_from_dev")
        own = [where for where, _ in self.all_files() if where.endswith(".test")]
        if own:
            raise ValueError(f"task '{self.name}': test_from_dev carves a test split out of dev, but {own[0]} already "
                             "gives one; remove test_from_dev, or the test files")
        if not self.split_files("dev"):
            raise ValueError(f"task '{self.name}': test_from_dev carves the test split out of dev rows, but the task "
                             "has no dev files; add files.dev")

    def _infer_pair(self) -> None:
        """A mapped text_b makes the task a pair task when `pair` is left out; `pair: false` with a mapped
        text_b is a contradiction and refused (the second text would be dropped without a word)."""
        mapped = [where for where, data_file in self.all_files() if data_file.columns.text_b is not None]
        if not mapped or self.pair:
            return
        if "pair" in self.model_fields_set:
            raise ValueError(f"task '{self.name}': {mapped[0]}.columns.text_b is mapped but pair is false, "
                             "so the second text would be ignored; set pair: true, or remove text_b")
        self.pair = True

    def all_files(self) -> list[tuple[str, DataFile]]:
        """Every data file of the spec with where it sits (`files.train`, `domain_files.books.dev`)."""
        out = [(f"files.{split}", data_file) for split, data_file in self.files.items()]
        for domain, files in sorted(self.domain_files.items()):
            out += [(f"domain_files.{domain}.{split}", data_file) for split, data_file in files.items()]
        return out

    def split_files(self, split: str) -> list[tuple[str | None, DataFile]]:
        """The files of one split with the domain each gives its rows (None: `files`, rows keep their own); a test
        split carved from dev (`test_from_dev`) reads the dev files."""
        if split == "test" and self.test_from_dev is not None:
            split = "dev"
        if self.domain_files:
            return [(domain, files[split]) for domain, files in sorted(self.domain_files.items())  # type: ignore[index]
                    if split in files]
        return [(None, self.files[split])] if split in self.files else []  # type: ignore[index]

    @property
    def has_domains(self) -> bool:
        """Whether the spec gives rows domains: domain_files, or a mapped `columns.domain` (text tasks: a tag only).
        Rows carry domain ids when `domains` is not empty: a column whose every cell is empty (the transfer set of a
        task without domains) gives none."""
        if self.type == "text":
            return False
        return bool(self.domain_files) or any(f.columns.domain is not None for _, f in self.all_files())

    def _check_text(self) -> None:
        """A text task is unlabelled text: no labels, no head, no metrics, one text an example (or, from_tasks
        with keep_pairs, a pair task's pair)."""
        if self.labels:
            raise ValueError(f"task '{self.name}': a text task has no labels; remove labels")
        if self.pair:
            raise ValueError(f"task '{self.name}': a text task has one text an example; remove pair (a pair task "
                             "named in from_tasks contributes each of its texts, or each pair with keep_pairs)")
        if "metrics" in self.model_fields_set and self.metrics:
            raise ValueError(f"task '{self.name}': a text task is not evaluated; remove metrics")
        self.metrics = []
        for split, data_file in self.files.items():
            if data_file.columns.label is not None:
                raise ValueError(f"task '{self.name}': a text task has no labels; remove files.{split}.columns.label")
        if self.from_tasks and "train" in self.files:
            raise ValueError(f"task '{self.name}': give either from_tasks or files.train, not both")
        if not self.from_tasks and not self.files:
            raise ValueError(f"task '{self.name}': a text task needs files.train (a txt/jsonl/csv/tsv file or a "
                             "saved dataset) or from_tasks (tasks whose training texts to use)")
        if self.name in self.from_tasks or len(set(self.from_tasks)) != len(self.from_tasks):
            raise ValueError(f"task '{self.name}': from_tasks {self.from_tasks} must name other tasks, each once")
        if self.sources and [source.name for source in self.sources] != self.from_tasks:
            raise ValueError(f"task '{self.name}': sources must be the specs of from_tasks, in order")

    @property
    def is_multilabel(self) -> bool:
        """Whether a row holds a set of labels (an int64 bit mask, bit i for labels[i]; -1: no label)."""
        return self.type == "multilabel"

    @property
    def has_labels(self) -> bool:
        """Whether the task's head scores named labels (classification, multilabel), not one score."""
        return self.type in ("classification", "multilabel")

    @property
    def has_head(self) -> bool:
        """Whether the task has labels, a head and metrics (every type but text)."""
        return self.type != "text"

    @property
    def splits(self) -> list[str]:
        """The splits this task can read: its files (any domain's), train for a from_tasks text task, and test for
        one carved from dev."""
        if self.domain_files:
            found = [split for split in SPLITS if any(split in files for files in self.domain_files.values())]
        else:
            found = list(self.files) + (["train"] if self.from_tasks and "train" not in self.files else [])
        return found + (["test"] if self.test_from_dev is not None and "dev" in found else [])

    @property
    def num_labels(self) -> int:
        """Output size of the task's head (1 for regression, 0 for text: no head)."""
        if self.type == "text":
            return 0
        return 1 if self.type == "regression" else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def fingerprint_spec(task: Task) -> dict:
    """The spec as data fingerprints hash it: fields added since (domain_files, keep_pairs, a file's quoting,
    no_label_value, int_labels and label_separator) are left out while at their default, so the caches of tasks
    that do not use them keep their keys; `domains` is always left out (it changes no row: the views, which hold
    domain ids, add it to their own key), and so is `test_from_dev` (it changes no training row: the dev and test
    fingerprints add the carve themselves, `ExampleStore._rows_payload`)."""
    dump = task.model_dump(mode="json")
    dump.pop("domains")
    dump.pop("test_from_dev")
    if not dump["domain_files"]:
        dump.pop("domain_files")
    if not dump["keep_pairs"]:  # as before the field: each text alone
        dump.pop("keep_pairs")
    for data_file in [*dump["files"].values(), *(f for files in dump.get("domain_files", {}).values()
                                                for f in files.values())]:
        for name, default in (("quoting", "none"), ("no_label_value", None), ("int_labels", None),
                              ("label_separator", ",")):
            if data_file[name] == default:
                data_file.pop(name)
    dump["sources"] = [fingerprint_spec(source) for source in task.sources]
    return dump


def _glue(name: str, folder: str, *, labels: list[str] | None, metrics: list[str], text_a: str | int,
          text_b: str | int | None = None, label: str | int = "label", header: bool = True,
          id_col: str | int | None = None, dev: str = "dev.tsv",
          hf: tuple[str, str | None, list[str] | None, str] | None = None) -> dict[str, Task]:
    """Build the GLUE-TSV spec of a task and, when ``hf`` is given, its `load_dataset('glue')` twin."""
    is_reg = labels is None
    cols = Columns(text_a=text_a, text_b=text_b, label=label, id=id_col)
    tsv = Task(
        name=name, type="regression" if is_reg else "classification", labels=labels or [],
        pair=text_b is not None, metrics=metrics,
        files={
            "train": DataFile(path=f"glue/{folder}/train.tsv", header=header, columns=cols),
            "dev": DataFile(path=f"glue/{folder}/{dev}", header=header, columns=cols),
        },
    )
    out = {name: tsv}
    if hf is not None:
        hf_text_a, hf_text_b, int_names, hf_dev = hf
        hf_cols = Columns(text_a=hf_text_a, text_b=hf_text_b, label="label", id="idx")
        out[f"{name}-hf"] = tsv.model_copy(update={
            "name": f"{name}-hf",
            "files": {
                split: DataFile(path="nyu-mll/glue", format="hf_hub", hf_name=name, hf_split=hf_split,
                                columns=hf_cols, int_label_names=int_names)
                for split, hf_split in (("train", "train"), ("dev", hf_dev))
            },
        })
    return out


def _amazon(domain: str) -> Task:
    cols = Columns(text_a="text", label="label")
    return Task(
        name=f"amazon-{domain}", labels=["0", "1"], metrics=["accuracy", "f1"], domain=domain,
        files={split: DataFile(path=f"amazon/{domain}/{split}.tsv", columns=cols, domain=domain)
               for split in SPLITS},
    )


def _builtin_tasks() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    binary = ["0", "1"]
    nli3 = ["contradiction", "entailment", "neutral"]
    tasks |= _glue("sst2", "SST-2", labels=binary, metrics=["accuracy"], text_a="sentence",
                   hf=("sentence", None, binary, "validation"))
    tasks |= _glue("mrpc", "MRPC", labels=binary, metrics=["f1", "accuracy"], text_a="#1 String",
                   text_b="#2 String", label="Quality", hf=("sentence1", "sentence2", binary, "validation"))
    # CoLA's TSV has no header: source, label, original mark, sentence.
    tasks |= _glue("cola", "CoLA", labels=binary, metrics=["matthews", "accuracy"], text_a=3, label=1,
                   header=False, hf=("sentence", None, binary, "validation"))
    tasks |= _glue("stsb", "STS-B", labels=None, metrics=["pearson", "spearman"], text_a="sentence1",
                   text_b="sentence2", label="score", id_col="index",
                   hf=("sentence1", "sentence2", None, "validation"))
    tasks |= _glue("qnli", "QNLI", labels=["entailment", "not_entailment"], metrics=["accuracy"],
                   text_a="question", text_b="sentence", id_col="index",
                   hf=("question", "sentence", ["entailment", "not_entailment"], "validation"))
    tasks |= _glue("rte", "RTE", labels=["entailment", "not_entailment"], metrics=["accuracy"],
                   text_a="sentence1", text_b="sentence2", id_col="index",
                   hf=("sentence1", "sentence2", ["entailment", "not_entailment"], "validation"))
    tasks |= _glue("wnli", "WNLI", labels=binary, metrics=["accuracy"], text_a="sentence1",
                   text_b="sentence2", id_col="index", hf=("sentence1", "sentence2", binary, "validation"))
    tasks |= _glue("qqp", "QQP", labels=binary, metrics=["f1", "accuracy"], text_a="question1",
                   text_b="question2", label="is_duplicate", id_col="id",
                   hf=("question1", "question2", binary, "validation"))
    tasks |= _glue("mnli", "MNLI", labels=nli3, metrics=["accuracy"], text_a="sentence1", text_b="sentence2",
                   label="gold_label", id_col="index", dev="dev_matched.tsv",
                   hf=("premise", "hypothesis", ["entailment", "neutral", "contradiction"],
                       "validation_matched"))
    # The shared MNLI sample with genres (not the GLUE layout): genre is the domain.
    tasks["mnli-genre"] = Task(
        name="mnli-genre", labels=nli3, pair=True, metrics=["accuracy"], domains=MNLI_GENRES,
        files={
            "train": DataFile(path="mnli/train_subset_genre_tokenized.tsv",
                              columns=Columns(text_a="sentence1", text_b="sentence2", label="label",
                                              domain="genre")),
            "dev": DataFile(path="mnli/dev_matched_genre_subset.tsv",
                            columns=Columns(text_a="sentence1", text_b="sentence2", label="gold_label",
                                            id="index", domain="genre")),
        },
    )
    for domain in ("books", "dvd", "electronics", "kitchen"):
        tasks[f"amazon-{domain}"] = _amazon(domain)
    # One sentiment task over the three Amazon domains of the shared data (Meta-KD's setting).
    tasks["amazon"] = Task(
        name="amazon", labels=["0", "1"], metrics=["accuracy", "f1"],
        domain_files={domain: {split: DataFile(path=f"amazon/{domain}/{split}.tsv",
                                               columns=Columns(text_a="text", label="label")) for split in SPLITS}
                      for domain in AMAZON_DOMAINS},
    )
    return tasks


BUILTIN_TASKS: dict[str, Task] = _builtin_tasks()


def get_task(name: str, extra: dict[str, Task] | None = None) -> Task:
    """Look a task up among ``extra`` (user-declared) and the built-ins; a text task's ``from_tasks`` are looked
    up the same way into its ``sources``, so readers need no registry."""
    if extra and name in extra:
        task = extra[name]
    elif name in BUILTIN_TASKS:
        task = BUILTIN_TASKS[name]
    else:
        known = sorted(set(BUILTIN_TASKS) | set(extra or {}))
        raise UnknownTaskError(f"unknown task '{name}'; known tasks: {', '.join(known)}")
    if task.from_tasks and not task.sources:
        task = task.model_copy(update={"sources": [_corpus_source(task, ref, extra) for ref in task.from_tasks]})
    return task


def _corpus_source(corpus: Task, name: str, extra: dict[str, Task] | None) -> Task:
    try:
        source = get_task(name, extra)
    except UnknownTaskError as exc:
        raise UnknownTaskError(f"task '{corpus.name}', from_tasks: {exc}") from exc
    if source.from_tasks:
        raise UnknownTaskError(f"task '{corpus.name}', from_tasks: '{name}' is itself built from_tasks; name its "
                               f"sources ({', '.join(source.from_tasks)}) instead")
    if "train" not in source.files:
        raise UnknownTaskError(f"task '{corpus.name}', from_tasks: '{name}' has no train split to take texts from")
    return source
