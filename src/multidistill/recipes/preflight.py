"""Settings checked before a recipe's first stage (`check_settings`): models and feature losses against the
encoders' configs (online teachers' positions included), model paths, POS taggers, and the mask token that masking
augmentation writes against every tokenizer that reads it.

A student's `student_layers` beyond its encoder's layers, or a `max_seq_length` beyond its positions, is otherwise
found when that model's stage builds it: after the teachers and stores before it, possibly hours in. Only the
encoders' `config.json` is read here (no weights); the stage's own check stays, for what cannot be read early.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel
from transformers import AutoConfig

from multidistill.config import LossTerm, ModelConfig, ObjectiveConfig, TrainConfig
from multidistill.data.augment import AugmentConfig, load_pos_tagger
from multidistill.errors import ConfigError, ModelError
from multidistill.losses import LOSSES, build_loss
from multidistill.models.backbone import max_positions, resolve_model_path
from multidistill.models.families import model_dims, quirks_of
from multidistill.models.features import ModelDims
from multidistill.models.layers import layer_count, valid_layers
from multidistill.models.multitask import read_model_config
from multidistill.recipes.common import TEACHER_REF

T = TypeVar("T", bound=BaseModel)


def sections(settings: BaseModel, kind: type[T], prefix: str = "") -> Iterator[tuple[str, T]]:
    """Every ``kind`` section in ``settings`` (nested sections included), with its dotted key."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, kind):
            yield f"{prefix}{name}", value
        elif isinstance(value, BaseModel):
            yield from sections(value, kind, f"{prefix}{name}.")


def model_sections(settings: BaseModel, prefix: str = "") -> Iterator[tuple[str, ModelConfig]]:
    """Every `ModelConfig` in ``settings`` (nested sections included), with its dotted key."""
    return sections(settings, ModelConfig, prefix)


def check_model_path(name_or_path: str | None, key: str) -> None:
    """Refuse, by ``key``, a model name that can only be a local folder and is none (a pkg: path whose package is
    missing, a missing folder, a file); hub names are left to the stage that loads them."""
    if name_or_path is None or name_or_path == TEACHER_REF:
        return
    try:
        resolve_model_path(name_or_path)
    except ModelError as exc:
        raise ConfigError(f"key '{key}': {exc}") from exc


def check_saved_model(folder: str | None, key: str, *, references: bool = True) -> None:
    """Refuse, by ``key``, a folder that must hold a saved multidistill model (init_from, heads_from: never a hub
    name) and does not, as the loader would refuse it (`read_model_config`, which reads no weights). `@teacher`
    passes only where ``references`` (a recipe's settings, whose stages resolve it)."""
    if folder is None or (references and folder == TEACHER_REF):
        return
    try:
        read_model_config(Path(folder))
    except ModelError as exc:
        raise ConfigError(f"key '{key}': {exc}") from exc


def check_model_paths(settings: BaseModel, *, references: bool = True) -> None:
    """Refuse, by key, every model section's name_or_path and tokenizer that can only be a local folder and is none
    (name_or_path also beside init_from, when the tokenizer comes from it), its init_from and heads_from that hold no
    saved model, and a run's online_teachers like name_or_path: named here, not by the stage that loads them, which
    knows no key (a recipe's only after the stages before it). Only the settings' own values: the folders a recipe
    wires from one stage into the next (a fine-tune's init_from, a stage's online teachers) are checked by that
    stage's run, once they exist.

    `@teacher` is a recipe's reference to its teacher, resolved by the recipe in name_or_path, tokenizer and
    heads_from: refused in init_from, and anywhere in a run's own config (``references`` False: `train-teacher`,
    `distill`, or a stage's run), where nothing resolves it."""
    for key, model in model_sections(settings):
        if model.init_from == TEACHER_REF:
            raise ConfigError(f"key '{key}.init_from': `{TEACHER_REF}` is not resolved there (name_or_path, tokenizer "
                              "and heads_from take it); give the saved model's folder")
        unresolved = [name for name in ("name_or_path", "tokenizer", "heads_from")
                      if not references and getattr(model, name) == TEACHER_REF]
        if unresolved:
            raise ConfigError(f"key '{key}.{unresolved[0]}': `{TEACHER_REF}` names a recipe's teacher, and this run "
                              "has none to resolve it; give a model folder or name")
        if model.init_from is None or model.tokenizer is None:  # the tokenizer comes from name_or_path
            check_model_path(model.name_or_path, f"{key}.name_or_path")
        check_model_path(model.tokenizer, f"{key}.tokenizer")
        check_saved_model(model.init_from, f"{key}.init_from", references=references)
        check_saved_model(model.heads_from, f"{key}.heads_from", references=references)
    for index, teacher in enumerate(getattr(settings, "online_teachers", None) or []):  # a run config's
        check_model_path(teacher, f"online_teachers.{index}")


def encoder_dims(source: str, cut: list[int] | None, trust_remote_code: bool) -> ModelDims | None:
    """The sizes a feature loss is built from, read from the encoder's config (its kept layers where cut); None
    where that cannot be read here (the stage then checks). A family whose features cannot be read, or a config
    without a value its features need, is a ConfigError (`family_of`)."""
    config = _encoder_config(source, trust_remote_code)
    if config is None:
        return None
    dims = model_dims(config)
    return replace(dims, num_layers=len(cut)) if cut else dims


def _built_dims(model: ModelConfig, source: str) -> ModelDims | None:
    """The sizes of a student built from settings (``model.backbone_config``, on ``source``'s family where it names
    no model_type); None where its config cannot be made here (the stage that builds it says why). A family whose
    features cannot be read is a ConfigError (`family_of`)."""
    from multidistill.models.build import student_config

    try:
        config = student_config(model.model_copy(update={"name_or_path": source}))
    except Exception:  # a bad backbone_config is the stage's to name, by its own key
        return None
    return model_dims(config)


def _terms(objective: object) -> Iterator[LossTerm]:
    if isinstance(objective, ObjectiveConfig):
        yield from (*objective.classification, *objective.multilabel, *objective.regression,
                    *(term for terms in objective.tasks.values() for term in terms))
    elif isinstance(objective, list):
        yield from (term for term in objective if isinstance(term, LossTerm))


def check_feature_losses(settings: BaseModel) -> None:
    """Build, with the sizes read from the encoders' configs, every feature loss of a section that holds a student
    model and its objective, so a size that does not fit (relation heads that do not divide the width, a layer
    map beyond the layers) is refused by key before the first stage, not when the stage builds it."""
    teacher = teacher_source(settings)
    for key, section in sections(settings, BaseModel):
        model, objective = getattr(section, "model", None), getattr(section, "objective", None)
        if not isinstance(model, ModelConfig) or model.architecture != "hf" or model.init_from is not None \
                or objective is None:
            continue
        terms = [term for term in _terms(objective) if getattr(LOSSES.get(term.loss), "needs_dims", False)]
        if not terms or teacher is None:
            continue
        try:  # before the first stage: an unreadable family otherwise fails after the teacher has trained
            dims = feature_dims(model, teacher)
        except ConfigError as exc:
            raise ConfigError(f"key '{key}.objective': {exc}") from exc
        if dims is None:
            continue
        for term in terms:
            try:
                build_loss(term.loss, dims=dims, **term.params)
            except ConfigError as exc:
                raise ConfigError(f"key '{key}.objective': {exc}") from exc


def encoder_positions(source: str, trust_remote_code: bool = False) -> int | None:
    """How many tokens an encoder (a name, folder or multidistill model folder) reads; None where its config cannot
    be read here or says no limit."""
    config = _encoder_config.__wrapped__(source, trust_remote_code)  # uncached: callers outside check_settings
    try:
        return None if config is None else max_positions(config)
    except (TypeError, ValueError):  # an odd config (pad_token_id not a number)
        return None


def teacher_tokenizers(settings: BaseModel) -> list[tuple[str, str]]:
    """Each teacher's tokenizer as it can be read before the teachers exist (a teacher trained here keeps its
    model.tokenizer, else its encoder's; a given teacher folder its own), with the key that names it."""
    teacher = getattr(settings, "teacher", None)
    model = teacher if isinstance(teacher, ModelConfig) else getattr(teacher, "model", None)
    if isinstance(model, ModelConfig) and model.tokenizer and model.tokenizer != TEACHER_REF:
        prefix = "teacher" if model is teacher else "teacher.model"
        return [(model.tokenizer, f"{prefix}.tokenizer")]
    return teacher_sources(settings)


def teacher_sources(settings: BaseModel) -> list[tuple[str, str]]:
    """Each teacher's encoder as it can be read before the teachers exist (the encoder a teacher is trained from,
    or each given teacher folder), with the key that names it; none where that cannot be read from a config file."""
    teacher = getattr(settings, "teacher", None)
    model = teacher if isinstance(teacher, ModelConfig) else getattr(teacher, "model", None)
    if isinstance(model, ModelConfig):
        key = "teacher.name_or_path" if model is teacher else "teacher.model.name_or_path"
        return [(model.name_or_path, key)] if _checkable(model) else []
    given = getattr(teacher, "model_dirs", None) or []
    return [(str(folder), f"teacher.model_dirs.{i}") for i, folder in enumerate(given)]


def check_teacher_positions(teachers: list[tuple[str, str]], length: int, key: str,
                            trust_remote_code: bool = False,
                            role: str = "the online teacher {source} ({source_key}), which reads the student's "
                                        "tokens") -> None:
    """Refuse, by ``key`` (the student's max_seq_length), a ``length`` beyond an online teacher's positions: a stage
    feeds its online teachers the student's tokens, and an encoder given more positions than it has fails inside its
    embeddings, after the stages before it. ``teachers``: (encoder name or model folder, the key naming it);
    ``role`` names such an encoder in the message (another reader of ``length`` tokens: the prototype encoder)."""
    for source, source_key in teachers:
        if source == TEACHER_REF:
            continue
        limit = encoder_positions(source, trust_remote_code)  # None: the stage's own check applies
        if limit is not None and length > limit:
            raise ConfigError(f"key '{key}': {length} tokens exceed the {limit} positions of "
                              f"{role.format(source=source, source_key=source_key)}; set {key} to {limit} or less, "
                              "or give an encoder with more positions")


def feature_dims(model: ModelConfig, teacher: tuple[str, list[int] | None]) -> dict[str, ModelDims] | None:
    """The sizes feature losses between ``model`` (a student; `@teacher` is cut from ``teacher``) and ``teacher``
    (its encoder and kept layers, `teacher_source`) are built from; None where a side cannot be read here. A family
    whose features cannot be read is a ConfigError."""
    of_teacher = model.name_or_path == TEACHER_REF  # a student of `@teacher` is cut from the cut teacher
    source = teacher[0] if of_teacher else model.name_or_path
    cut = model.student_layers or (teacher[1] if of_teacher else None)
    student = (_built_dims(model, source) if model.backbone_config is not None else
               encoder_dims(source, cut, model.trust_remote_code))
    dims = {"student": student, "teacher": encoder_dims(teacher[0], teacher[1], model.trust_remote_code)}
    return None if None in dims.values() else dims


def tokenizer_of(source: str, trust_remote_code: bool):
    """The tokenizer of an encoder or model folder; None where it cannot be loaded here (a hub name offline)."""
    from multidistill.models.backbone import load_tokenizer

    try:
        return load_tokenizer(source, trust_remote_code=trust_remote_code)
    except ModelError:
        return None


def check_student_tokens(model: ModelConfig, teachers: list[tuple[str, str]], section: str, why: str) -> None:
    """Refuse, by the student's tokenizer key (under ``section``), a student whose tokenizer splits text otherwise
    than an online teacher's (``teachers``: source, key): token-level losses compare position by position. ``why``
    names the stage or objective that reads them. Sources that cannot be read here are left to the stage."""
    from multidistill.utils.hashing import same_tokenization

    own = model.tokenizer or model.name_or_path
    if TEACHER_REF in (own, model.name_or_path) and model.tokenizer in (None, TEACHER_REF):
        return  # the teacher's own tokenizer
    student = tokenizer_of(own, model.trust_remote_code)
    if student is None:
        return
    for source, source_key in teachers:
        teacher = tokenizer_of(source, model.trust_remote_code)
        if teacher is not None and not same_tokenization(student, teacher):
            key = "model.tokenizer" if model.tokenizer else "model.name_or_path"
            raise ConfigError(f"key '{section}.{key}': {own} splits text otherwise than the teacher {source} "
                              f"({source_key}), and {why} compares the two position by position on the student's "
                              "tokens; choose a student with the teacher's tokenizer (e.g. one cut from it: "
                              "name_or_path '@teacher' with student_layers), or an objective without feature terms")


def check_online_teachers(settings: BaseModel) -> None:
    """Refuse, by key, a student section whose objective reads teacher features (the teachers then run online on
    the student's tokens) with a max_seq_length beyond a teacher's positions."""
    teachers = teacher_sources(settings)
    for key, section in sections(settings, BaseModel):
        model, objective = getattr(section, "model", None), getattr(section, "objective", None)
        if not isinstance(model, ModelConfig) or model.architecture != "hf" or objective is None:
            continue
        if any("teacher_features" in getattr(LOSSES.get(term.loss), "inputs", ()) for term in _terms(objective)):
            check_teacher_positions(teachers, model.max_seq_length, f"{key}.model.max_seq_length",
                                    model.trust_remote_code)
            if not getattr(settings, "checks_own_tokenizers", False):
                check_student_tokens(model, teacher_tokenizers(settings), key,
                                     f"its objective's feature terms ('{key}.objective')")


def check_fp16(settings: BaseModel) -> None:
    """Refuse, by key, `fp16` in a stage's train section where no GPU is here (each stage refuses it too, but a
    late stage only after the earlier ones)."""
    from multidistill.training.run import refuse_fp16_without_gpu

    for key, train in sections(settings, TrainConfig):
        refuse_fp16_without_gpu(train, key)


def check_pos_taggers(settings: BaseModel) -> None:
    """Refuse, by key, an augmentation section's `pos_tagger: nltk` where nltk or its tagger data are missing:
    the transfer stage that loads it may come after hours of teachers."""
    for key, augment in sections(settings, AugmentConfig):
        if augment.pos_tagger == "nltk":
            try:
                load_pos_tagger("nltk")
            except ConfigError as exc:
                raise ConfigError(f"key '{key}.pos_tagger': {exc}") from exc


def no_mask_token(source: str, key: str, reader: str = "the teacher's tokenizer") -> str:
    """The refusal of masking augmentation over a tokenizer without a mask token, by ``key`` (the p_mask);
    ``reader`` names the tokenizer's role."""
    return (f"key '{key}': {reader} ({source}) has no mask token, so masked words would be written "
            "as the literal text '[MASK]', which it splits into ordinary word pieces; set p_mask: 0 (swaps and "
            "n-gram sampling still apply), or use a teacher whose tokenizer has a mask token")


def reads_mask_token(tokenizer, mask_token: str) -> bool:
    """Whether ``tokenizer`` reads ``mask_token``, as masking augmentation writes it into a variant's text, as its own
    mask token: one token, its mask id (two BERT tokenizers' '[MASK]' are; '[MASK]' read by RoBERTa's is not)."""
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        return False
    return list(tokenizer(mask_token, add_special_tokens=False)["input_ids"]) == [tokenizer.mask_token_id]


def refuse_mask_readers(readers: list[tuple[str, str, object]], key: str) -> None:
    """Refuse, by ``key`` (the p_mask), masking augmentation whose text some reader cannot read as masked words.
    ``readers``: (source, the key or words naming it, tokenizer) of every tokenizer that reads the variants (the
    teachers that label them, the students that learn from them), the first the one whose mask token is written
    (the first teacher's, `transfer_stage`). Another mask token, or one its tokenizer does not read as a single
    token, is ordinary text to a reader: '[MASK]' read as '[', 'M', 'A', 'S', 'K', ']' by a RoBERTa tokenizer."""
    if not readers:
        return
    source, where, written = readers[0]
    if written.mask_token is None:
        raise ConfigError(no_mask_token(source, key, "the teacher's tokenizer" if where.startswith("teacher")
                                        else f"the tokenizer of {where}"))
    mask = written.mask_token
    for other, other_where, tokenizer in readers[1:]:
        if reads_mask_token(tokenizer, mask):
            continue
        pieces = tokenizer.tokenize(mask)
        own = f"its mask token is {tokenizer.mask_token!r}" if tokenizer.mask_token else "it has no mask token"
        raise ConfigError(
            f"key '{key}': masked words are written into the transfer set as the mask token {mask!r} of {source} "
            f"({where}), whose variants every teacher labels and every student learns from, but {other} "
            f"({other_where}) reads it as ordinary text {pieces} ({own}); set {key}: 0 (word swaps and n-gram "
            "sampling still apply), or use teachers and students whose tokenizers share the mask token (e.g. "
            "tokenizers of one family: two BERT tokenizers both read '[MASK]')")


def mask_readers(settings: BaseModel) -> list[tuple[str, str]]:
    """Every tokenizer that reads an augmented transfer set, as it can be read before the teachers exist, with the
    key that names it: each teacher's (`teacher_tokenizers`; they label the variants, the first one's mask token is
    written), then each other model section's (the students: model.tokenizer, else name_or_path, a BiLSTM's
    included). A student of `@teacher` reads with the first teacher's tokenizer, already listed."""
    readers = teacher_tokenizers(settings)
    for key, model in model_sections(settings):
        if key == "teacher" or key.startswith("teacher."):
            continue
        own = model.tokenizer or model.name_or_path
        if own != TEACHER_REF:
            readers.append((own, f"{key}.tokenizer" if model.tokenizer else f"{key}.name_or_path"))
    return readers


def check_mask_tokens(settings: BaseModel) -> None:
    """Refuse, by key, augmentation that masks words (p_mask > 0) where a tokenizer that reads the variants cannot
    read the mask token written into them (`refuse_mask_readers`): the first teacher's tokenizer has none
    (Llama-style tokenizers: it was written as the literal '[MASK]'), or another teacher's or a student's tokenizer
    masks with another token (BERT's '[MASK]' is characters to RoBERTa's), silently, before."""
    augments = [key for key, augment in sections(settings, AugmentConfig) if augment.p_mask > 0]
    if not augments:
        return
    trusted = {key: model.trust_remote_code for key, model in model_sections(settings)}
    readers = []
    for source, key in mask_readers(settings):
        tokenizer = tokenizer_of(source, trusted.get(key.rpartition(".")[0], False))
        if tokenizer is not None:  # one that cannot be loaded here (a hub name offline) is left to the stage
            readers.append((source, key, tokenizer))
    for key in augments:
        refuse_mask_readers(readers, f"{key}.p_mask")


def _checkable(model: ModelConfig) -> bool:
    """A Transformer built from a pretrained encoder as it is: a BiLSTM, a saved model (init_from) or an encoder
    built from settings (backbone_config) are checked where they are built."""
    return model.architecture == "hf" and model.init_from is None and model.backbone_config is None


def teacher_source(settings: BaseModel) -> tuple[str, list[int] | None] | None:
    """What `@teacher` names before the teacher exists: the encoder it is trained from (with the teacher's own
    student_layers, if any), or the first given teacher; None where that cannot be read from a config file."""
    teacher = getattr(settings, "teacher", None)
    model = teacher if isinstance(teacher, ModelConfig) else getattr(teacher, "model", None)
    if isinstance(model, ModelConfig):
        return (model.name_or_path, model.student_layers) if _checkable(model) else None
    given = getattr(teacher, "model_dirs", None)
    return (str(given[0]), None) if given else None


def check_settings(settings: BaseModel) -> None:
    """Every check here, in the order a user would fix them: a recipe's (or the demo's) models, feature losses and
    POS taggers, before its first stage writes anything."""
    try:
        check_models(settings)
        check_feature_losses(settings)
        check_online_teachers(settings)
        check_pos_taggers(settings)
        check_mask_tokens(settings)
        check_fp16(settings)
    finally:
        _encoder_config.cache_clear()  # a later run (in this process) reads the folders as they are then


@cache  # one run's checks read each encoder's config once
def _encoder_config(source: str, trust_remote_code: bool):
    """The encoder's config, or None where it cannot be read here: remote code may raise anything, and the
    stage's own check still applies."""
    try:
        return AutoConfig.from_pretrained(resolve_model_path(source), trust_remote_code=trust_remote_code)
    except Exception:
        return None


def check_models(settings: BaseModel) -> None:
    """Refuse, by key, a model path that can only be a local folder and is none, a Transformer model's
    `student_layers` outside its encoder's layers and a `max_seq_length` beyond its positions, for every model
    section of a recipe (or the demo) whose encoder config can be read."""
    check_model_paths(settings)
    for key, model in model_sections(settings):
        if not _checkable(model):
            continue
        found = teacher_source(settings) if model.name_or_path == TEACHER_REF else (model.name_or_path, None)
        if found is None:
            continue
        source, cut = found  # cut: the teacher's own student_layers, which a student of `@teacher` indexes into
        config = _encoder_config(source, model.trust_remote_code)
        if config is None:
            continue
        layers = model.student_layers
        no_cut = quirks_of(config).no_cut
        if layers and no_cut is not None:  # refused here, not by its stage after the teacher trained
            raise ConfigError(f"key '{key}.student_layers': a '{config.model_type}' encoder cannot be cut: {no_cut}")
        if layers:
            try:
                total = len(cut) if cut else layer_count(config)
            except ModelError:
                total = None
            if total is not None and not valid_layers(layers, total):
                raise ConfigError(f"key '{key}.student_layers': {layers} must be increasing indices in "
                                  f"0..{total - 1}: " + (f"the teacher keeps {total} layers of {source}" if cut
                                                          else f"{source} has {total} layers"))
        try:
            limit = max_positions(config)
        except (TypeError, ValueError):  # an odd config (pad_token_id not a number): the stage's check applies
            limit = None
        if model.max_seq_length is not None and limit is not None and model.max_seq_length > limit:
            raise ConfigError(f"key '{key}.max_seq_length': {model.max_seq_length} exceeds {source}'s limit "
                              f"of {limit} positions; set it to {limit} or less")
