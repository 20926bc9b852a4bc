"""What a Meta-KD run reads: the views of its one task (every domain, one target, all but one) and the checks
that run before the first stage writes (`check_inputs` -> `Plan`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multidistill.config import DataConfig, DomainHoldout, TaskRef
from multidistill.data.prepare import open_example_store
from multidistill.data.store import ExampleStore
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError, ModelError
from multidistill.losses.registry import build_loss
from multidistill.models.multitask import MODEL_CONFIG_FILE, read_model_config
from multidistill.recipes.common import TEACHER_REF, check_teacher_heads
from multidistill.recipes.metakd.config import MetaKDRecipe
from multidistill.recipes.preflight import (
    check_model_path,
    check_student_tokens,
    check_teacher_positions,
    encoder_dims,
    encoder_positions,
    feature_dims,
    teacher_source,
    teacher_sources,
    teacher_tokenizers,
)
from multidistill.recipes.stages import print_note
from multidistill.training.objective import check_branch_domains
from multidistill.utils.paths import name_problem
from multidistill.utils.suggest import closest_name


@dataclass(frozen=True)
class Plan:
    """What the checks found: the task, its domains (all, and those the run keeps) and the targets."""

    task: str
    domains: tuple[str, ...]
    kept: tuple[str, ...]
    targets: tuple[str, ...]
    report_split: str
    main_metric: str
    train_rows: dict[str, int]  # target -> its training rows after data.fraction


def task_view(recipe: MetaKDRecipe, ref: TaskRef, eval_split: str | None = None) -> DataConfig:
    """A plain DataConfig (no fraction) over one view of the task, with the recipe's subset seed."""
    given = {key: getattr(recipe.data, key) for key in DataConfig.model_fields
             if key in recipe.data.model_fields_set and key != "tasks"}
    return DataConfig(**{**given, "tasks": [ref], "subset_seed": recipe.subset_seed,
                         **({"eval_split": eval_split} if eval_split else {})})


def _fractions(recipe: MetaKDRecipe, target: str | None) -> dict[str, float] | None:
    fractions = dict(recipe.data.tasks[0].domain_fraction or {})
    if target is not None and recipe.data.fraction < 1:
        # The target's share of its own full rows: in a target's stages it replaces the target's domain_fraction
        # (one seeded draw; a product of two draws would not nest), which still holds where it is no target.
        fractions[target] = recipe.data.fraction
    return fractions or None


def union_data(recipe: MetaKDRecipe, target: str | None = None, without: str | None = None,
               fold: int | None = None) -> DataConfig:
    """Every kept domain (``target`` at data.fraction; ``without`` left out entirely; ``fold`` of the target's
    rows left out, of student.cross_fit_folds)."""
    ref = recipe.data.tasks[0]
    include, exclude = ref.domains_include, ref.domains_exclude
    if without is not None:
        if include:
            include = [d for d in include if d != without]
        else:
            exclude = [*(exclude or []), without]
    fractions = {d: f for d, f in (_fractions(recipe, target) or {}).items() if d != without} or None
    holdout = None if fold is None else DomainHoldout(domain=target, folds=recipe.student.cross_fit_folds, fold=fold)
    return task_view(recipe, TaskRef(name=ref.name, domains_include=include, domains_exclude=exclude,
                                 domain_fraction=fractions, domain_holdout=holdout))


def target_data(recipe: MetaKDRecipe, target: str, eval_split: str | None = None) -> DataConfig:
    """The target domain's rows only (training rows at data.fraction)."""
    fraction = (_fractions(recipe, target) or {}).get(target)
    return task_view(recipe, TaskRef(name=recipe.data.tasks[0].name, domains_include=[target],
                                 domain_fraction={target: fraction} if fraction is not None else None), eval_split)


def union_suffix(recipe: MetaKDRecipe, target: str) -> str:
    """The stages over all domains are shared by the targets at fraction 1, one per target below."""
    return "" if recipe.data.fraction == 1 else f"-{target}"


def seed_suffix(recipe: MetaKDRecipe, seed: int) -> str:
    return f"-seed-{seed}" if len(recipe.student.seeds) > 1 else ""


def prototype_encoder(recipe: MetaKDRecipe) -> str:
    """The frozen encoder of the prototype scores: prototypes.encoder, else the teacher's pretrained encoder or the
    first given meta-teacher."""
    if recipe.prototypes.encoder is not None:
        return recipe.prototypes.encoder
    return recipe.teacher.model.name_or_path if recipe.teacher.model is not None else recipe.teacher.model_dirs[0]


def prototype_length(recipe: MetaKDRecipe) -> int:
    """Tokens per row of the prototype encoder: prototypes.max_seq_length, else the teacher's max_seq_length (a
    given meta-teacher's: the length it was trained with, recorded in its folder; 128 where none is)."""
    if recipe.prototypes.max_seq_length is not None:
        return recipe.prototypes.max_seq_length
    if recipe.teacher.model is not None:
        return recipe.teacher.model.max_seq_length
    # A given meta-teacher: 128 (what runs made before read, so their prototypes stay valid), or, for an encoder with
    # fewer positions (such a run failed in stage 0), the length it was trained with.
    given = recipe.teacher.model_dirs[0]
    limit = encoder_positions(str(given))
    if limit is None or limit >= 128:
        return 128
    try:
        recorded = read_model_config(Path(given)).get("max_length")
    except ModelError:  # not a model folder: the checks that read it say so
        recorded = None
    valid = isinstance(recorded, int) and not isinstance(recorded, bool) and 0 < recorded <= limit
    return recorded if valid else limit


def check_inputs(recipe: MetaKDRecipe) -> Plan:
    """Everything the stages read, checked before the first stage writes: a task with domains and labels, the
    targets, each domain's training rows after the fraction (each labelled where a stage reads its class, and of
    every class, for class prototypes), a given meta-teacher's domain branch and a configured one's domains, what the
    baselines need, and labelled rows in each target's eval and report splits."""
    ref = recipe.data.tasks[0]
    store = open_example_store(union_data(recipe), max_examples_per_task=None, seed=recipe.subset_seed)
    store.validate(["train"])
    task = store.tasks[ref.name]
    if not task.domains:
        raise ConfigError(f"key 'data.tasks': task '{task.name}' has no domains; Meta-KD needs one task over "
                          "several domains (domain_files, or a mapped columns.domain), e.g. amazon or mnli-genre")
    if task.type != "classification":
        raise ConfigError(f"key 'data.tasks': task '{task.name}' is a {task.type} task; Meta-KD's expertise weights "
                          "need the teacher's probability of the gold class (a classification task: one class a row)")
    counts = _domain_counts(store, task)
    kept = tuple(d for d in task.domains if counts.get(d, 0) or _selected(ref, d))
    for domain in kept:
        if counts.get(domain, 0) == 0:
            raise ConfigError(f"key 'data.tasks': domain '{domain}' of task '{task.name}' has no training rows; "
                              "exclude it (domains_exclude) or give it data")
    if len(kept) < 2:
        raise ConfigError(f"key 'data.tasks': Meta-KD needs at least two domains with training rows, task "
                          f"'{task.name}' keeps {list(kept)}")
    targets = tuple(recipe.targets or kept)
    for target in targets:
        if target not in kept:
            raise ConfigError(f"key 'targets': domain {target!r} is not in the data (task '{task.name}' keeps "
                              f"domains: {', '.join(kept)}){_closest(target, kept)}")
    # A target names stage folders (student-<d>, meta-teacher-without-<d>, ...): every unfit name at once, as
    # targets default to every domain and each would otherwise cost a run to find.
    problems = [problem for problem in map(name_problem, targets) if problem is not None]
    if problems:
        raise ConfigError(f"key 'targets': the target domains of task '{task.name}' name the run's stage folders, "
                          f"but {'; '.join(f'domain {problem}' for problem in problems)}; rename "
                          f"{'it' if len(problems) == 1 else 'them'} in the data, or leave "
                          f"{'it' if len(problems) == 1 else 'them'} out of targets (a domain that is no target "
                          "still trains the meta-teacher)")
    train_rows = {target: _target_rows(recipe, target, counts[target]) for target in targets}
    folds = recipe.student.cross_fit_folds
    if folds is not None:
        if recipe.teacher.model is None:
            raise ConfigError("key 'student.cross_fit_folds': it trains one meta-teacher per fold from teacher.model; "
                              "replace teacher.model_dirs with teacher.model (the meta-teacher and the fold teachers "
                              "are then trained from it), or drop cross_fit_folds")
        for target in targets:
            if train_rows[target] < folds:
                raise ConfigError(f"key 'student.cross_fit_folds': {folds} folds of the {train_rows[target]} "
                                  f"training rows of domain '{target}' leave a fold empty; use at most "
                                  f"{train_rows[target]}")
    if recipe.prototypes.mode == "class":  # the prototype stages group every row of their view by its class
        # Each view opened once for both checks; at fraction 1 the prototypes' view is the union `store` above.
        union = ([_train_store(union_data(recipe, t), recipe) for t in targets] if recipe.data.fraction < 1
                 else [store])
        for view_store in union:
            _check_labelled(view_store, recipe, task, targets)
        folded = (_train_store(union_data(recipe, t, fold=k), recipe) for t in targets for k in range(folds or 0))
        for view_store in (*union, *folded):
            _check_classes(view_store, task)
    else:  # domain prototypes read no label; a target's expertise weights read each of its rows' gold class
        for target in targets:
            _check_labelled(_train_store(target_data(recipe, target), recipe), recipe, task, targets)
    _check_given_teachers(recipe, task)
    _check_domain_branches(recipe, task)
    if recipe.student.model.architecture == "hf":  # stage A runs the meta-teacher online on the student's tokens
        check_teacher_positions(teacher_sources(recipe), recipe.student.model.max_seq_length,
                                "student.model.max_seq_length", recipe.student.model.trust_remote_code)
    check_model_path(recipe.prototypes.encoder, "prototypes.encoder")
    _check_stage_a(recipe)
    encoder_key = ("prototypes.encoder" if recipe.prototypes.encoder is not None else
                   "teacher.model.name_or_path" if recipe.teacher.model is not None else "teacher.model_dirs.0")
    check_teacher_positions([(prototype_encoder(recipe), encoder_key)], prototype_length(recipe),
                            "prototypes.max_seq_length", role="the prototype encoder {source} ({source_key})")
    if "meta_without_target" in recipe.baselines and len(kept) < 3:
        raise ConfigError(f"key 'baselines': meta_without_target trains a meta-teacher on the other domains, whose "
                          f"prototype scores need at least two of them; task '{task.name}' keeps only "
                          f"{len(kept)} domains")
    needs_model = sorted({"single_domain", "mixed", "meta_without_target"} & set(recipe.baselines))
    if needs_model and recipe.teacher.model is None:
        raise ConfigError(f"key 'baselines': {needs_model} train teachers of their own from teacher.model, which "
                          "cannot be given beside teacher.model_dirs: replace teacher.model_dirs with teacher.model "
                          "(the meta-teacher is then trained here too), or drop them")
    student = recipe.student.model
    if "no_kd" in recipe.baselines:
        for name in ("name_or_path", "tokenizer", "heads_from"):
            if getattr(student, name) == TEACHER_REF:
                raise ConfigError(f"key 'student.model.{name}': the no_kd baseline has no teacher to resolve "
                                  "`@teacher`; name the encoder every student starts from (the same start for all "
                                  "arms), or drop no_kd")
    split = _report_split(recipe, task, targets)
    return Plan(task.name, tuple(task.domains), kept, targets, split, task.main_metric, train_rows)


def _report_split(recipe: MetaKDRecipe, task: Task, targets: tuple[str, ...]) -> str:
    """The split the scores stage reads: report_split, else test where the task has one and every target's test
    rows carry labels (else data.eval_split, with a note saying why). Each target needs labelled rows in it and in
    data.eval_split (its student is selected there), or the scores stage would fail after every other stage."""
    eval_split, given = recipe.data.eval_split, recipe.report_split
    split = given or ("test" if "test" in task.splits else eval_split)
    if split not in task.splits:
        raise ConfigError(f"key 'report_split': task '{task.name}' has no '{split}' split (it has "
                          f"{', '.join(task.splits)})")
    report = open_example_store(task_view(recipe, TaskRef(name=task.name, domains_include=list(targets))),
                                max_examples_per_task=None, seed=recipe.subset_seed)
    report.validate([eval_split, split])
    own = {}
    for target in targets:  # each student selects on its own domain's dev rows and is scored on its report rows
        own[target] = open_example_store(task_view(recipe, TaskRef(name=task.name, domains_include=[target])),
                                         max_examples_per_task=None, seed=recipe.subset_seed)
        for needed in dict.fromkeys([eval_split, split]):
            try:
                own[target].examples(task.name, needed)
            except ConfigError as exc:
                raise ConfigError(f"key 'targets': domain {target!r} of task '{task.name}' has no rows in split "
                                  f"'{needed}' (its student is selected on data.eval_split and scored on "
                                  f"report_split); give it {needed} rows, or leave it out of targets") from exc
    unlabelled = [target for target in targets if not own[target].labelled_rows(task.name, split)]
    if unlabelled and split != eval_split:
        where = f"domain{'s' if len(unlabelled) > 1 else ''} {', '.join(repr(t) for t in unlabelled)}"
        if given is not None:
            raise ConfigError(f"key 'report_split': task '{task.name}' split '{split}' has no labelled rows in target "
                              f"{where}, and the report scores each target on its report_split rows against their "
                              f"labels; set report_split: {eval_split} (data.eval_split), give those rows labels, or "
                              "leave such domains out of targets")
        print_note(f"report_split not set and task '{task.name}' split 'test' has no labelled rows in target {where} "
                   f"(a split without labels cannot be scored): the scores are on data.eval_split ('{eval_split}'), "
                   f"which also selects the students; give the test rows labels, or set report_split: {eval_split}")
        split = eval_split
    for target in targets:
        if not own[target].labelled_rows(task.name, eval_split):
            raise ConfigError(f"key 'data.eval_split': task '{task.name}' split '{eval_split}' has no labelled rows "
                              f"in target domain '{target}', which selects its student (and "
                              f"{'is' if split == eval_split else 'is not'} the report split); give those rows "
                              "labels, or leave the domain out of targets")
    return split


def note_replaced_fractions(recipe: MetaKDRecipe, plan: Plan) -> None:
    """Below data.fraction 1, a target's own stages keep data.fraction of all its training rows, in place of its
    data.tasks[0].domain_fraction (`_fractions`): said once (never silently), with where that entry is still read
    (another target's stages over all domains, where this domain is a source)."""
    given = recipe.data.tasks[0].domain_fraction or {}
    replaced = [domain for domain in plan.targets if domain in given]
    if recipe.data.fraction == 1 or not replaced:
        return
    keys = " and ".join(f"data.tasks.0.domain_fraction.{domain} ({given[domain]})" for domain in replaced)
    one = len(replaced) == 1
    if len(plan.targets) == 1:  # its only reader would be another target's view over all domains
        where = "no stage reads it: that domain is the only target"
    else:
        where = (f"{'it' if one else 'each'} still applies where {'that' if one else 'its'} domain is not the "
                 "target (the other targets' stages over all domains)")
    print_note(f"{keys} replaced by data.fraction ({recipe.data.fraction}) where "
               f"{'that domain is' if one else 'those domains are'} the target: a target's own stages (its "
               "prototypes, meta-teacher, students and baselines) keep data.fraction of all its training rows, not "
               f"of what domain_fraction keeps; {where}")


def _check_stage_a(recipe: MetaKDRecipe) -> None:
    """Stage A's terms are the method's (hidden_mse, attention_mse, transferable_mse against the meta-teacher, run
    online on the student's tokens): a student whose sizes they cannot compare (another head count, a family whose
    features cannot be read) or whose tokenizer splits text otherwise was refused only when stage A started, after
    the meta-teacher had trained. Refused here, by the student's key (the meta-teacher's for its own family)."""
    model = recipe.student.model
    teacher = teacher_source(recipe)
    if model.architecture != "hf" or model.init_from is not None or teacher is None:
        return  # (a BiLSTM student is refused as the recipe loads); a saved model is checked when it loads
    stage_a = "Meta-KD's stage A (hidden_mse, attention_mse and transferable_mse against the meta-teacher)"
    teacher_key = "teacher.model.name_or_path" if recipe.teacher.model is not None else "teacher.model_dirs.0"
    try:
        encoder_dims(teacher[0], teacher[1], model.trust_remote_code)
    except ConfigError as exc:
        raise ConfigError(f"key '{teacher_key}': {stage_a} reads the meta-teacher's features: {exc}") from exc
    try:
        dims = feature_dims(model, teacher)
        for loss in ("hidden_mse", "attention_mse", "transferable_mse") if dims else ():
            build_loss(loss, dims=dims)
    except ConfigError as exc:
        raise ConfigError(f"key 'student.model.name_or_path': {stage_a} cannot compare this student with it: {exc}; "
                          "its terms are the method's, so choose a student that fits (e.g. one cut from the "
                          "meta-teacher: name_or_path '@teacher' with student_layers)") from exc
    check_student_tokens(model, teacher_tokenizers(recipe), "student",
                         "Meta-KD's stage A (hidden states and attention scores against the meta-teacher)")


def _target_rows(recipe: MetaKDRecipe, target: str, selected: int) -> int:
    """The target's training rows in its own view, counted there (``selected``: in the view of every domain, where
    its domain_fraction applies), so the budgets and the fold check see what the stages train on."""
    if recipe.data.fraction == 1:
        return selected
    store = open_example_store(target_data(recipe, target), max_examples_per_task=None, seed=recipe.subset_seed)
    try:
        return len(store.examples(recipe.data.tasks[0].name, "train"))
    except ConfigError as exc:  # the data model's "keeps no row", said with the recipe's key
        raise ConfigError(f"key 'data.fraction': {recipe.data.fraction} of the training rows of domain "
                          f"'{target}' keeps no row; raise the fraction") from exc


def _selected(ref: TaskRef, domain: str) -> bool:
    return (not ref.domains_include or domain in ref.domains_include) and domain not in (ref.domains_exclude or [])


def _domain_counts(store, task) -> dict[str, int]:
    """Training rows per domain name (after the task's selection)."""
    column = store.examples(task.name, "train").with_format("arrow")["domain"].to_pylist()
    counts: dict[str, int] = {}
    for name in column:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _train_store(data: DataConfig, recipe: MetaKDRecipe) -> ExampleStore:
    """The example store of a view the stages read (every split a stage reads it with), its training rows read."""
    store = open_example_store(data, max_examples_per_task=None, seed=recipe.subset_seed)
    store.validate(["train"])
    return store


def _check_labelled(store: ExampleStore, recipe: MetaKDRecipe, task: Task, targets: tuple[str, ...]) -> None:
    """Refuse training rows without a label (-1; docs/data.md keeps them for other recipes) in ``store``'s view,
    whose rows' gold classes a stage reads: class prototypes group every row by it, and a target's expertise weights
    read p_T(y_i | x_i) (else stage 0 failed, or the weights stage after the meta-teacher had trained)."""
    rows = store.examples(task.name, "train").with_format("arrow")
    missing = np.flatnonzero(rows["label"].to_numpy() < 0)
    if not len(missing):
        return
    first = int(missing[0])
    domain = rows["domain"][first].as_py()
    if recipe.prototypes.mode == "class":
        why = "Meta-KD's class prototypes (prototypes.mode: class) and expertise weights need every row's gold class"
        fix = "label those rows, or drop them from the training data"
        if not set(rows["domain"].take(missing).to_pylist()) & set(targets):
            fix += " (or use prototypes.mode: domain: then only the target domains' rows need labels)"
    else:
        why = ("Meta-KD's expertise weights need the gold class of every training row of a target domain "
               "(p_T(y_i | x_i))")
        fix = "label those rows, drop them from the training data, or leave the domain out of targets"
    files = store.tasks[task.name].split_files("train")
    source = next((f for d, f in files if d in (None, domain)), None)
    path = None
    if source is not None and source.format != "hf_hub":
        path = Path(source.path) if Path(source.path).is_absolute() else store.data_root / source.path
    raise DataError(f"task '{task.name}' split 'train' has {len(missing)} row{'s' if len(missing) > 1 else ''} "
                    f"without a label (first: row '{rows['id'][first].as_py()}', domain '{domain}'); {why}: {fix}",
                    path=path)


def _check_classes(store: ExampleStore, task) -> None:
    """Class prototypes compare a row with the same class's centroids in the other domains: every domain needs
    rows of every class that has rows (checked here, before the prototype stage, so nothing is written)."""
    rows = store.examples(task.name, "train").with_format("arrow")
    pairs = set(zip(rows["domain"].to_pylist(), rows["label"].to_pylist(), strict=True))
    domains = sorted({d for d, _ in pairs})
    for label in sorted({y for _, y in pairs}):
        for domain in domains:
            if (domain, label) not in pairs:
                raise ConfigError(f"key 'prototypes.mode': 'class' compares each row with its class's centroids in "
                                  f"the other domains, but domain '{domain}' has no training row of class "
                                  f"'{task.labels[label]}' (after data.fraction and any cross-fit fold); use "
                                  "mode: domain, or more rows")


def _closest(name: str, known: tuple[str, ...]) -> str:
    """`` ; did you mean 'x'?`` with the known name that differs only in case, else the closest one, if any."""
    close = closest_name(name, known)
    return f"; did you mean {close!r}?" if close else ""


def _check_domain_branches(recipe: MetaKDRecipe, task: Task) -> None:
    """A domain branch given in teacher.model (the meta-teachers') or student.model (stage A's) must be over exactly
    the task's domains, in their order: a batch's domain id k is the task's k-th domain, and the stages only checked
    the ids' range, so three names over two domains, or other names, trained silently. Left out, the recipe adds one
    over the task's domains (also to a meta-teacher without the target: its rows' ids still index them all). A branch
    that the section's init_from keeps is held to the same rule, before any stage: its stage refused it only when
    reached, after the stages before it."""
    for section in ("teacher", "student"):
        model = getattr(recipe, section).model
        branch = model.domain_branch if model is not None else None
        if branch is not None:
            check_branch_domains(branch.domains, task, f"{section}.model.domain_branch.domains",
                                 advice=", or leave domain_branch out (the recipe adds one over the task's domains)")
        if model is not None and model.init_from and (Path(model.init_from) / MODEL_CONFIG_FILE).is_file():
            saved = read_model_config(Path(model.init_from)).get("domain_branch")  # (a missing folder: preflight's)
            if saved is not None:
                check_branch_domains(saved.get("domains", []), task, f"{section}.model.init_from",
                                     f"{model.init_from} keeps a domain branch over ",
                                     advice="; start from a model without a branch, or one over those domains")


def _check_given_teachers(recipe: MetaKDRecipe, task: Task) -> None:
    """A given meta-teacher (teacher.model_dirs) must have a head for the task (its soft targets) and carry a domain
    branch over the task's domains: stage A's transferable_mse reads its tau."""
    domains = tuple(task.domains)
    for i, folder in enumerate(recipe.teacher.model_dirs):
        check_teacher_heads(Path(folder), [task], f"teacher.model_dirs.{i}")
        config = read_model_config(Path(folder))
        branch = config.get("domain_branch")
        if branch is None:
            raise ConfigError(f"key 'teacher.model_dirs.{i}': {folder} has no domain branch; Meta-KD's stage A "
                              "matches the meta-teacher's transferable vector, so give a model trained with "
                              "model.domain_branch (or let the recipe train it from teacher.model)")
        if list(branch.get("domains", [])) != list(domains):
            raise ConfigError(f"key 'teacher.model_dirs.{i}': {folder}'s domain branch is over domains "
                              f"{branch.get('domains')}, the data's are {list(domains)}; domain ids would disagree")
