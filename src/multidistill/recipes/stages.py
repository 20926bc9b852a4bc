"""Stages: a recipe step that writes one artifact folder, with a manifest that makes re-runs cheap.

Each finished stage folder holds `stage.json`: the stage's name, a fingerprint of its config and of its
inputs' fingerprints, and what it produced. Before a stage writes anything, `.pending/<stage>.json` records
its name, settings, inputs and fingerprint. Running a recipe again:

* a stage whose manifest matches is skipped (its artifact is reused as is);
* a stage that failed or was cut (its folder exists, no manifest yet, a matching pending record) is taken up
  again: training continues from its last checkpoint (from step 0 if it had none), a signal store from its
  last finished shard, and other stages (transfer sets, benchmarks) start over;
* a stage that wrote nothing before it stopped leaves no record and simply runs;
* a folder whose manifest or pending record holds other settings is refused, naming what changed and the
  folder to remove, and so is a non-empty folder that no record vouches for: nothing made from other
  settings, or not by this recipe, is ever reused or overwritten silently;
* a finished stage whose data changed since (a training, dev or test file edited in place) is refused too,
  naming the task split: each task split it read has its data fingerprint recorded in `stage.json` (`data`),
  outside the fingerprint, so stages recorded before that stay valid (they cannot be checked for it);
* a stage's fingerprint is of its inputs' settings, not of what they hold, so each finished stage records an id
  of its own making (`made`), the ids of the stages it read (`made_from`) and whether it is derived, outside the
  fingerprint (stages recorded before that stay valid). A stage about to be made anew (its folder gone or empty,
  or a derived one replaced) is refused while a stage recorded in the run folder was made from it as it was,
  directly or through derived stages, before anything runs; and a stage reached whose inputs are other makings
  than the ones it read (a folder replaced by a copy of another run's) is refused naming them.

A derived stage (scores, a benchmark: it only reads the stages before it) is made again instead of refused.
Inside `StageRunner.run_all` (`multidistill run`), the stages after the first one to run are checked before it
runs, so that a late stage's refusal does not come after hours of the stages before it. The run folder's
`summary.json` is removed before any stage runs (it would no longer describe the folder); the recipe's end
writes a new one.

Paths inside the run's folder enter the fingerprint relative to it (`portable`): a run folder that was moved, or a
recipe run again from another working folder, keeps its finished stages. Stages fingerprinted before that (their
absolute or cwd-relative paths hashed as written) are still recognised where those paths are unchanged.

Settings at their defaults stay out of the fingerprint (a later version that adds a setting, at a default that
keeps the old behaviour, keeps finished stages valid), but their values are recorded beside it (`DEFAULTS_KEY`):
a stage made when a default had another value is refused like other changed settings. Stages recorded before
the defaults were (no `DEFAULTS_KEY`) keep their fingerprints and stay valid; they cannot be checked for it.

When a stage's work raises (an error, Ctrl-C, SIGTERM), a note on the exception says what a re-run does
with it; the CLI prints those notes (`multidistill.utils.interrupt`).

`stage.json`'s `seconds` is the stage's wall time over all its runs: a stage that stops part-way adds the time
it ran to its pending record, and the run that finishes it adds its own (`parts` counts the runs). Time lost to
a process killed outright (SIGKILL, power loss) is not counted: nothing runs to record it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.markup import escape

from multidistill.errors import ConfigError
from multidistill.training.run_settings import at_defaults, flatten
from multidistill.utils.atomic import glob_escape, write_json
from multidistill.utils.console import stderr_console
from multidistill.utils.hashing import hash_json
from multidistill.utils.interrupt import STOPS, add_note
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import inside

STAGE_MANIFEST = "stage.json"
PENDING = ".pending"
STAGE_VERSION = 1
DEFAULTS_KEY = "__defaults__"  # in a settings payload: the values of the settings left at their defaults
SUMMARY = "summary.json"  # the recipe's closing table (`summary.write_summary`), written after its last stage
T = TypeVar("T")

console = stderr_console()  # off a terminal (a pipe, log.txt) 160 columns: rich's 80 split long stage lines


@dataclass
class StageOutcome:
    name: str
    folder: Path
    fingerprint: str
    skipped: bool
    seconds: float


@dataclass
class PlannedStage:
    """What a run would do with one stage (`StageRunner.dry_run`): ``action`` is 'reuse', 'run', 'resume' or
    'make again'; ``why`` says from where or why ('' when nothing needs saying)."""

    name: str
    action: str
    why: str = ""


@dataclass
class RunPlan:
    """A dry run's answer: the stages in order, as far as they could be checked, and where checking stopped (None:
    at the recipe's summary, so every stage was checked)."""

    stages: list[PlannedStage]
    stopped: str | None
    notes: list[str] = field(default_factory=list)  # what a run would print as notes (`print_note`), in order


def settings_payload(settings) -> dict | None:
    """A config section as a stage's JSON settings: the fields not at their defaults, plus (under
    `DEFAULTS_KEY`, outside the fingerprint) the values of those at their defaults, dotted keys."""
    if settings is None:
        return None
    full = flatten(settings.model_dump(mode="json"))
    return {**settings.model_dump(mode="json", exclude_defaults=True),
            DEFAULTS_KEY: {key: full[key] for key in at_defaults(settings)}}


def without_defaults(config):
    """A stage's settings as fingerprinted: without the recorded defaults (so fingerprints stay as before)."""
    if isinstance(config, dict):
        return {k: without_defaults(v) for k, v in config.items() if k != DEFAULTS_KEY}
    if isinstance(config, list):
        return [without_defaults(v) for v in config]
    return config


def changed_defaults(old, new, prefix: str = "") -> list[str]:
    """Defaults that differ between two stage settings (recorded vs now), as messages; settings recorded
    without their defaults (older stages) have none to compare."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return []
    lines = []
    before, after = old.get(DEFAULTS_KEY), new.get(DEFAULTS_KEY)
    if isinstance(before, dict) and isinstance(after, dict):
        lines += [f"the default of '{prefix}{key}' was {before[key]!r}, now {after[key]!r}"
                  for key in sorted(set(before) & set(after)) if before[key] != after[key]]
    for key in sorted(set(old) & set(new) - {DEFAULTS_KEY}, key=str):
        lines += changed_defaults(old[key], new[key], f"{prefix}{key}.")
    return lines


RUN_PATH = "@run"  # stands for the run folder in fingerprinted paths


def portable(config, root: Path):
    """``config`` with every string that is a path inside ``root`` (as given, absolute or resolved) written as
    ``@run/<path inside>``, so that a stage's fingerprint does not depend on where the run folder is."""
    root = Path(root)
    prefixes = sorted({f"{form}{os.sep}" for form in (str(root), os.path.abspath(root), str(root.resolve()))},
                      key=len, reverse=True)

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str):
            prefix = next((p for p in prefixes if value.startswith(p)), None)
            return value if prefix is None else f"{RUN_PATH}/{value[len(prefix):]}"
        return value

    return walk(config)


def fingerprints(name: str, config: dict, inputs: dict[str, str], root: Path) -> tuple[str, str]:
    """A stage's fingerprint (its settings without the recorded defaults, paths inside ``root`` made `portable`,
    its inputs' fingerprints) and the one stages made before `portable` recorded (paths as written)."""
    settings = without_defaults(config)
    return (hash_json({"stage": name, "config": portable(settings, root), "inputs": inputs}),
            hash_json({"stage": name, "config": settings, "inputs": inputs}))


class _CheckEnd(Exception):  # noqa: N818 - not an error: where a check pass cannot look further
    """Raised in a check pass at a stage whose folder would be taken up or replaced: the stages after it would read
    what the folder holds now, not what it will hold."""


SUMMARY_END = "the summary"  # where `stop_if_checking` ends a check pass

# During a check pass (`StageRunner.run_all`): the fingerprint each stage that has not run yet will record.
_PLANNED: ContextVar[dict[Path, str] | None] = ContextVar("planned_stages", default=None)


def stage_fingerprint(folder: Path) -> str:
    """The fingerprint recorded by a finished stage folder (during a check pass, for a stage that has not run yet:
    the one it will record)."""
    planned = _PLANNED.get()
    if planned is not None and folder in planned:
        return planned[folder]
    return read_versioned_json(folder / STAGE_MANIFEST, STAGE_VERSION, ConfigError)["fingerprint"]


def stood_in(folder: Path) -> bool:
    """True during a check pass for a stage folder it stood in for: that stage has not run, so what it will write
    (its stage.json included) cannot be read yet."""
    planned = _PLANNED.get()
    return planned is not None and folder in planned


def stop_if_checking() -> None:
    """For a recipe's closing step (its summary): a check pass (`StageRunner.run_all`) ends here, before it writes
    or shows the results of stages that have not run yet. Outside a check pass: nothing."""
    if _PLANNED.get() is not None:
        raise _CheckEnd(SUMMARY_END)


@dataclass
class _Notes:
    """The notes of one command (`print_note`): each one said so far, and whether the command prints them."""

    said: list[str]
    loud: bool


# Inside `StageRunner.run_all` and `StageRunner.dry_run`: the notes of that command.
_NOTES: ContextVar[_Notes | None] = ContextVar("notes", default=None)


def print_note(text: str) -> None:
    """Print "note: ``text``" (a setting given but not used, a choice made for the user; ``text`` is plain text,
    brackets and all). Inside a run (`StageRunner.run_all`) or a dry run (`StageRunner.dry_run`) each note is
    printed once, where the recipe first reaches it, even in the passes that print nothing else (a run's check
    pass, a whole dry run): a dry run shows the notes the run would, and its `RunPlan.notes` lists them. Nothing
    is printed where the console was made quiet before the command (or, outside one, is quiet now)."""
    notes = _NOTES.get()
    if notes is None:
        console.print(f"note: {text}", style="yellow", markup=False)
        return
    if text in notes.said:
        return
    notes.said.append(text)
    if notes.loud:  # the quiet of a check pass or a dry run silences stage lines, not notes
        quiet, console.quiet = console.quiet, False
        try:
            console.print(f"note: {text}", style="yellow", markup=False)
        finally:
            console.quiet = quiet


def made_id(manifest: dict) -> str:
    """The id of one making of a finished stage: its own `made` record, or for stages recorded before that, one
    derived from when it finished and how long it ran (equal only for the same making)."""
    made = manifest.get("made")
    return made if isinstance(made, str) else hash_json({"finished": manifest.get("finished"),
                                                        "seconds": manifest.get("seconds")})


def remade_inputs(recorded: dict[str, str] | None, now: dict[str, tuple[str, str | None]]) -> list[str]:
    """The stages (by name) a stage read that were made again since: ``recorded`` maps each input's role to the
    `made_id` it read (its record's `made_from`), ``now`` to (stage name, the made id now; None for a stage
    about to be made). Roles either side lacks are not compared (older records, inputs that are not stages)."""
    if not isinstance(recorded, dict):
        return []
    return sorted({now[role][0] for role in recorded.keys() & now.keys() if recorded[role] != now[role][1]})


def changed_data(recorded: dict[str, str] | None, now: dict[str, str] | None) -> list[str]:
    """The task splits ('<task>/<split>') that both a stage's record and this run name, whose data fingerprints
    differ; none where either has no record (stages made before data was recorded stay valid)."""
    if not recorded or not now:
        return []
    return sorted(key for key in recorded.keys() & now.keys() if recorded[key] != now[key])


class StageRunner:
    """Runs a recipe's stages under one output folder, skipping finished ones and resuming a cut one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.outcomes: list[StageOutcome] = []
        self._checks = False  # inside `run_all`: the first stage to run checks the stages after it first
        self._looked_at: set[str] = set()  # stages a check pass stood in for: they start no other check
        self._check_from: str | None = None  # the stage that started the last check pass
        self._refusal: BaseException | None = None  # what the check pass refused
        self._quiet_until: str | None = None  # after a check: the stage from which this pass prints again
        self._quiet = False  # the console's own setting, put back after a pass's quiet part
        # Each stage met in this run, by the fingerprint it records: (its name, its `made_id`; None while a check
        # pass stands in for it, which means "made again").
        self._made: dict[str, tuple[str, str | None]] = {}
        self._dry: list[PlannedStage] | None = None  # inside `dry_run`: what each stage met would do
        # What a recipe's checks read once per run and several stages share (the tasks' domain names, by data).
        self.memo: dict[object, object] = {}
        # Each stage name met in this pass of the recipe, with the fingerprint it asked for (`_one_name`).
        self._names: dict[str, str] = {}

    @property
    def _planned(self) -> dict[Path, str] | None:
        """During a check pass, the fingerprint each stage that has not run yet will record (`_PLANNED`, which
        `stage_fingerprint` reads without a runner); None otherwise."""
        return _PLANNED.get()

    def run_all(self, recipe: Callable[[StageRunner], T]) -> T:
        """``recipe(self)`` (a recipe's stages in order, then its summary), checking the stages after the first one
        to run before it runs.

        A stage is compared with its folder when its turn comes, so a late stage made with other settings would
        be refused after the stages before it ran (hours, for a teacher). Here the first stage that would run
        starts a check pass instead: the recipe goes on but nothing runs, each stage that would run stands in
        with the fingerprint it will record (`stage_fingerprint`), and a refusal is raised before anything ran.
        The pass ends where the recipe reads what a stage that has not run would write (that error is not the
        user's: the stage will write it), or at a stage whose folder would be taken up or replaced. The recipe
        then runs from its start for real, printing from where the check began; a later stage that no check
        looked at starts another.
        """
        self._checks, self._quiet = True, console.quiet
        notes = _NOTES.set(_Notes([], not console.quiet))  # each note once, though the recipe runs in passes
        try:
            while True:
                try:
                    self._names = {}
                    summary = recipe(self)
                    if self._planned is None:
                        return summary
                    # A check pass that reached the end read no output of the stages it stood in for (the last
                    # stage removed, or later ones recorded before `made_from`; `stop_if_checking` ends it before
                    # the summary): they still run.
                except Exception as exc:
                    if self._planned is None or exc is self._refusal:
                        raise
                finally:
                    _PLANNED.set(None)
                self._quiet_until, console.quiet = self._check_from, True
        finally:
            _NOTES.reset(notes)
            self._checks, self._quiet_until, console.quiet = False, None, self._quiet

    def dry_run(self, recipe: Callable[[StageRunner], object]) -> RunPlan:
        """What `run_all` would do with ``recipe``'s stages, running and writing nothing: the check pass of
        `run_all`, from the first stage. A stage it would refuse raises here as there (a `ConfigError`). Checking
        stops where the recipe reads what a stage that has not run would write, or at a stage it would take up
        or replace (the stages after it read what that folder holds then); `RunPlan.stopped` says where. The
        notes the recipe gives on the way (`print_note`) are printed, once each, and listed in `RunPlan.notes`."""
        self._dry, quiet = [], console.quiet
        console.quiet = True
        notes = _Notes([], not quiet)
        token = _NOTES.set(notes)
        _PLANNED.set({})
        self._names = {}
        try:
            try:
                recipe(self)
            except _CheckEnd as end:
                stopped = None if str(end) == SUMMARY_END else (
                    f"stage '{end}' would be {'taken up' if self._dry[-1].action == 'resume' else 'made again'}; "
                    "the stages after it read what it holds then, so they are checked when it has run")
            except Exception as exc:
                if exc is self._refusal:
                    raise
                said = " ".join(str(exc).split())
                if not any(row.action != "reuse" for row in self._dry):
                    raise  # every stage is made: a real error of the recipe's, not where checking must stop
                stopped = (f"the recipe then reads what a stage not run yet would write ("
                           f"{said if len(said) <= 160 else said[:157] + '...'}); the rest is checked once the "
                           "stages listed have run")
            else:
                stopped = None
            return RunPlan(self._dry, stopped, notes.said)
        finally:
            _PLANNED.set(None)
            _NOTES.reset(token)
            console.quiet, self._dry = quiet, None

    def refused(self, exc: ConfigError) -> ConfigError:
        """``exc``, a refusal of a setting that a recipe raises itself before a stage (e.g. the stage's run config
        failing validation), marked as the check pass's answer: a run or dry run then stops with it before any
        stage runs, rather than taking it for the end of what can be checked in advance. Raise what it returns."""
        if self._planned is not None and exc is not self._refusal:
            self._refusal = exc
            add_note(exc, "found by a dry run: nothing ran or was written" if self._dry is not None else
                     f"found by a check before stage '{self._check_from}' and the stages after it ran")
        return exc

    def run(self, name: str, config: dict, inputs: dict[str, str], work: Callable[[Path, bool], dict | None],
            *, rerun: str = "does this stage again from its start", derived: bool = False,
            data: dict[str, str] | None = None) -> Path:
        """Run ``work(folder, resume)`` for stage ``name`` unless it is already done.

        ``config`` is the JSON-able settings of the stage; ``inputs`` maps each input's role to its
        fingerprint (another stage's, or a hash of a user-supplied folder). ``work`` may return extra
        manifest fields. ``rerun`` says what running the recipe again does with this stage if it stops
        part-way (printed with the error or interrupt). A ``derived`` stage only reads the stages before it
        (scores, a benchmark), so one of other settings, inputs or data is made again, saying why, instead of
        refused: nothing is lost that the kept stages cannot give again. ``data`` maps each task split the stage
        reads ('<task>/<split>') to its data fingerprint (file contents, task spec, subset); it is recorded beside
        the fingerprint, so a finished stage is never reused on data edited since.
        """
        if name == self._quiet_until:  # the pass before this one printed what came before this stage
            self._quiet_until, console.quiet = None, self._quiet
        folder = inside(self.root, name)
        # The second, what stages made before `portable` recorded, is valid while their paths are as they were.
        accepted = fingerprints(name, config, inputs, self.root)
        fingerprint = accepted[0]
        self._one_name(name, fingerprint)
        manifest = folder / STAGE_MANIFEST
        pending = inside(self.root, PENDING, f"{name}.json")
        sources = {role: self._made[value] for role, value in inputs.items() if value in self._made}
        try:
            if manifest.is_file():
                recorded = read_versioned_json(manifest, STAGE_VERSION, ConfigError)
                replace = _finished_differs(name, folder, recorded, accepted, config, inputs, derived, data,
                                            remade_inputs(recorded.get("made_from"), sources))
                if replace is None:
                    console.print(f"[green]stage {name}: done, reusing {folder}[/green]")
                    if self._dry is not None:
                        self._dry.append(PlannedStage(name, "reuse"))
                    self._made[recorded["fingerprint"]] = (name, made_id(recorded))
                    if self._planned is None and all(o.name != name for o in self.outcomes):  # once a run_all
                        self.outcomes.append(StageOutcome(name, folder, recorded["fingerprint"], True, 0.0))
                    return folder
                resume, before = False, {"seconds": 0.0, "parts": 0}
            else:
                resume, before, replace = _take_up(name, folder, pending, accepted, config, inputs, derived, sources)
            if not resume:  # made anew: what was made from the stage as it was must not outlive it
                old = {recorded["fingerprint"]} if replace is not None and manifest.is_file() else set()
                self._refuse_stale_readers(name, {*accepted, *old}, f"{folder} is gone or empty, so this run would "
                                           "make it anew" if replace is None else f"this run would make {folder} again "
                                           f"(it {replace})", folder if replace is None else None)
        except ConfigError as exc:
            self.refused(exc)
            raise
        if self._dry is not None:
            self._dry.append(PlannedStage(name, "resume", "continues the unfinished run in its folder") if resume else
                             PlannedStage(name, "make again", f"{folder.name} {replace}") if replace else
                             PlannedStage(name, "run", "not made yet"))
        if self._stand_in(name, folder, fingerprint, fresh=not resume and replace is None):
            self._made[fingerprint] = (name, None)
            return folder
        self._retire_summary(name)
        if replace is not None:
            self._replace(name, folder, replace)
        made_from = {role: made for role, (_, made) in sources.items() if made is not None}
        self._record(pending, name, accepted, config, inputs, before, made_from, derived)
        console.print(f"[bold]stage {name}: {'resuming' if resume else 'running'}[/bold] -> {folder}")
        started = time.perf_counter()
        try:
            extra = work(folder, resume) or {}
        except BaseException as exc:
            self._stopped(exc, name, folder, pending, rerun, before, time.perf_counter() - started)
            raise
        seconds = before["seconds"] + time.perf_counter() - started
        folder.mkdir(parents=True, exist_ok=True)
        made = uuid.uuid4().hex
        write_json(manifest, {"format_version": STAGE_VERSION, "name": name, "fingerprint": fingerprint,
                              "config": config, "inputs": inputs, **({"data": data} if data else {}),
                              "made": made, "made_from": made_from, **({"derived": True} if derived else {}),
                              "seconds": seconds, "parts": before["parts"] + 1,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})
        pending.unlink(missing_ok=True)
        self._made[fingerprint] = (name, made)
        self.outcomes.append(StageOutcome(name, folder, fingerprint, False, seconds))
        return folder

    def _one_name(self, name: str, fingerprint: str) -> None:
        """Refuse a second stage of one name and other settings or inputs in a pass: both would share one folder, so
        the second was refused as "made with other settings" after the first had run, and again on every run after.
        Names a recipe builds from the user's (Meta-KD's targets 'media' and 'mixed-media' both give
        'signals-mixed-media') can meet so. A stage met again with the same fingerprint is one stage, reused. Only
        within a recipe's pass (`run_all`, `dry_run`): calls outside one are separate runs of the folder."""
        if not self._checks and self._dry is None:
            return
        first = self._names.setdefault(name, fingerprint)
        if first != fingerprint:
            raise self.refused(ConfigError(
                f"stage '{name}': two stages of this run have that name, with other settings or inputs, and would "
                "share its folder; the recipe builds stage names from names in the config or data (tasks, domains, "
                "e.g. Meta-KD's targets 'media' and 'mixed-media' meet in 'signals-mixed-media'): rename one of "
                "those names, or leave it out of the run"))

    def _refuse_stale_readers(self, name: str, fingerprints: set[str], how: str, restore: Path | None) -> None:
        """Before stage ``name`` is made anew (``how`` says why): refuse when a stage recorded in the run folder
        (finished, or cut with a pending record) was made from it as it was (its `made_from` names the role whose
        input is one of ``fingerprints``), directly or through derived stages (which would be made again from the
        new one). Such a stage would otherwise be refused only after this one ran, or (read outside the stage
        runner: MITKD's other arm) shown beside it. ``restore``: the folder whose old contents would also do."""
        records = _stage_records(self.root)
        frontier, seen, stale = set(fingerprints), set(), []
        while frontier:
            readers = [r for r in records if r["fingerprint"] not in seen and any(
                value in frontier and role in r["made_from"] for role, value in r["inputs"].items())]
            frontier = set()
            for record in readers:
                seen.add(record["fingerprint"])
                if record["derived"]:  # made again from the new one in turn: follow it to its readers
                    frontier.add(record["fingerprint"])
                elif record["name"] not in stale:
                    stale.append(record["name"])
        if not stale:
            return
        one = len(stale) == 1
        them = "it" if one else "them"
        raise ConfigError(
            f"stage '{name}': {how}, but {'stage' if one else 'stages'} {_stage_list(stale)} "
            f"{'was' if one else 'were'} made from it as it was and would no longer match it; remove {them} (and the "
            f"stages after {them}) to make {them} again from the new one"
            + (f", or restore {restore} as it was" if restore is not None else ""))

    def _stand_in(self, name: str, folder: Path, fingerprint: str, *, fresh: bool) -> bool:
        """During a check pass, or at the first stage to run that no check looked at (inside `run_all`: it starts
        one), stand in for stage ``name``: nothing runs, and the stages after it read the fingerprint it will
        record. True when it stood in. A stage that would take up or replace its folder ends the pass."""
        if self._planned is None:
            if not (self._checks and fresh and name not in self._looked_at):
                return False
            self._check_from, console.quiet = name, True
            _PLANNED.set({})
        if not fresh:
            raise _CheckEnd(name)
        self._planned[folder] = fingerprint
        self._looked_at.add(name)
        return True

    def _retire_summary(self, name: str) -> None:
        """Remove summary.json before stage ``name`` runs: it no longer describes the folder, and a run that fails
        or is stopped must not leave it looking current. One unlink (atomic); the recipe's end writes a new one."""
        summary = self.root / SUMMARY
        if summary.is_file() or summary.is_symlink():
            summary.unlink()
            console.print(f"[yellow]{escape(str(summary))} removed: stage {name} runs, so it no longer describes "
                          "the stages; the recipe writes it again at its end[/yellow]")

    @staticmethod
    def _replace(name: str, folder: Path, why: str) -> None:
        """Remove a derived stage's folder (ours: its record says so) before making it again, and say why. It is
        first renamed away (one atomic step), so a deletion cut short leaves no half-deleted stage folder, only a
        hidden `.<name>.replaced` that the next replacement clears."""
        console.print(f"[yellow]stage {name}: {escape(f'{folder} {why}')}; it only reads the stages before it, so "
                      "it is made again[/yellow]")
        trash = folder.with_name(f".{folder.name}.replaced")
        _remove(trash)  # what a replacement cut short left
        folder.rename(trash)
        _remove(trash)

    @staticmethod
    def _record(pending: Path, name: str, accepted: tuple[str, str], config: dict, inputs: dict[str, str],
                before: dict, made_from: dict[str, str], derived: bool) -> None:
        """Write the record that stage ``name`` runs with these settings (``before``: the earlier runs' time;
        ``made_from``: the `made_id` of each stage it reads)."""
        pending.parent.mkdir(parents=True, exist_ok=True)
        write_json(pending, {"format_version": STAGE_VERSION, "name": name, "fingerprint": accepted[0],
                             "config": config, "inputs": inputs, "made_from": made_from,
                             **({"derived": True} if derived else {}), **before})

    def _stopped(self, exc: BaseException, name: str, folder: Path, pending: Path, rerun: str, before: dict,
                 seconds: float) -> None:
        """A stage's work raised (an error, Ctrl-C, SIGTERM): say what a re-run does, add the ``seconds`` this
        run took to the pending record, and drop the record of a stage that wrote nothing (there is nothing to
        continue; `<stage>.partial` and the like count as written)."""
        if not folder.exists() and not any(self.root.glob(f"{glob_escape(name)}.*")):
            pending.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                pending.parent.rmdir()  # only when empty
            if isinstance(exc, STOPS):  # an error says for itself why the stage could not start
                add_note(exc, f"stage '{name}' stopped before writing {folder}; running the same command again "
                             "starts it")
            return
        # Best effort: recording the time must never hide why the stage stopped.
        with contextlib.suppress(Exception):
            record = read_versioned_json(pending, STAGE_VERSION, ConfigError)
            write_json(pending, {**record, "seconds": before["seconds"] + seconds, "parts": before["parts"] + 1})
        add_note(exc, f"stage '{name}' did not finish ({folder} is kept); running the same command again {rerun}")
        done = [o.name for o in self.outcomes]
        if done:
            add_note(exc, f"finished stages kept and reused on a re-run: {', '.join(done)}")


def _stage_records(root: Path) -> list[dict]:
    """Every stage record in the run folder that says which makings of its inputs it read: finished stages'
    `stage.json` and unfinished ones' pending records, as {name, fingerprint, inputs, made_from, derived}. Records
    that cannot be read, or hold no `made_from` (made before it existed), are left out: their turn checks them."""
    # A pending record counts while its stage's folder holds something (what `_take_up` would continue); a cut
    # stage whose folder was removed is made anew from whatever it reads then.
    pending = [path for path in (root / PENDING).glob("*.json")
               if (root / path.stem).is_dir() and any((root / path.stem).iterdir())]
    paths = [*root.glob(f"*/{STAGE_MANIFEST}"), *pending]
    records = []
    for path in paths:
        try:
            record = read_versioned_json(path, STAGE_VERSION, ConfigError)
        except ConfigError:
            continue
        inputs, made_from = record.get("inputs"), record.get("made_from")
        if isinstance(inputs, dict) and isinstance(made_from, dict) and made_from and isinstance(
                record.get("fingerprint"), str):
            records.append({"name": str(record.get("name", path.parent.name)), "fingerprint": record["fingerprint"],
                            "inputs": inputs, "made_from": made_from, "derived": record.get("derived") is True})
    return records


def _finished_differs(name: str, folder: Path, recorded: dict, accepted: tuple[str, str], config: dict,
                      inputs: dict[str, str], derived: bool, data: dict[str, str] | None,
                      remade: list[str]) -> str | None:
    """None when the finished stage in ``folder`` (its manifest ``recorded``) is reused as is; otherwise why a
    derived stage is made again. Any other stage made with other settings, inputs, defaults or data, or from an
    earlier making of a stage it reads (``remade``: `remade_inputs`), is refused."""
    defaults = changed_defaults(recorded.get("config"), config)
    same = recorded["fingerprint"] in accepted
    stale = changed_data(recorded.get("data"), data)
    if same and not stale and not remade and not (defaults and derived):
        _refuse_changed_defaults(name, folder, defaults)
        return None
    if same and stale:
        why = f"was made from other data ({', '.join(stale)} changed since: a file edited or replaced)"
        other = "restore the data it was made from"
    elif same and remade:
        why = f"was {_remade_text(remade)}"
        other = f"restore {_stage_list(remade)} as {'it was' if len(remade) == 1 else 'they were'}"
    else:
        why = f"was made with other settings or inputs{_changed_text(recorded, config, inputs, defaults)}"
        other = "choose another output_dir"
    if not derived:
        raise ConfigError(f"stage '{name}': {folder} {why}; remove it (and the stages after it) or {other}")
    return why


def _take_up(name: str, folder: Path, pending: Path, accepted: tuple[str, str], config: dict,
             inputs: dict[str, str], derived: bool,
             sources: dict[str, tuple[str, str | None]]) -> tuple[bool, dict, str | None]:
    """How stage ``name`` starts when ``folder`` holds no manifest: whether it continues an unfinished run there,
    the earlier runs' time ({seconds, parts}, zero for a fresh start), and why a derived stage's folder is
    replaced (None: it is not). An unfinished run of other settings, or of an earlier making of a stage it reads
    (``sources``: each input's stage name and `made_id` now), or a folder that no record in ``pending`` says this
    recipe started, is refused. Writes nothing."""
    fresh = {"seconds": 0.0, "parts": 0}
    if not (folder.exists() and any(folder.iterdir())):
        return False, fresh, None
    record = read_versioned_json(pending, STAGE_VERSION, ConfigError) if pending.is_file() else None
    if record is None:
        raise ConfigError(f"stage '{name}': {folder} exists but no record in {pending.parent} says this "
                          "recipe started it (a folder from elsewhere?); remove it or choose another output_dir")
    defaults = changed_defaults(record.get("config"), config)
    if derived and (record["fingerprint"] not in accepted or defaults):
        what = _changed_text(record, config, inputs, defaults)
        return False, fresh, f"holds an unfinished run made with other settings or inputs{what}"
    _refuse_changed_defaults(name, folder, defaults)
    if record["fingerprint"] not in accepted:
        what = _changed_text(record, config, inputs)
        raise ConfigError(f"stage '{name}': {folder} holds an unfinished run of this stage made with other "
                          f"settings or inputs{what}; run with those settings to continue it, or remove it "
                          f"(rm -r {shlex.quote(str(folder))}) to start it again with these")
    remade = remade_inputs(record.get("made_from"), sources)
    if remade:
        if derived:
            return False, fresh, f"holds an unfinished run {_remade_text(remade)}"
        raise ConfigError(f"stage '{name}': {folder} holds an unfinished run {_remade_text(remade)}; "
                          f"remove it (rm -r {shlex.quote(str(folder))}) to start it again from them")
    return True, _earlier_time(record), None


def _stage_list(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _remade_text(remade: list[str]) -> str:
    """Why a stage made from an earlier making of the stages ``remade`` is not reused ('made from ...')."""
    one = len(remade) == 1
    return (f"made from {'stage' if one else 'stages'} {_stage_list(remade)} as {'it was' if one else 'they were'}"
            f" before {'it was' if one else 'they were'} removed or replaced")


def _earlier_time(record: dict) -> dict:
    """The wall time a pending record says earlier runs of its stage took: {seconds, parts}; zero for records
    written before time was carried over (or holding nonsense)."""
    seconds, parts = record.get("seconds"), record.get("parts")
    if (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < float("inf")
            and isinstance(parts, int) and not isinstance(parts, bool) and parts >= 0):
        return {"seconds": float(seconds), "parts": parts}
    return {"seconds": 0.0, "parts": 0}


def _remove(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a folder, if there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _refuse_changed_defaults(name: str, folder: Path, changed: list[str]) -> None:
    """Refuse a stage whose recorded defaults differ from this version's (``changed``: `changed_defaults`' lines)."""
    if changed:
        raise ConfigError(f"stage '{name}': {folder} was made when {'; '.join(changed)} (this version changed "
                          f"those defaults); remove it (rm -r {shlex.quote(str(folder))}) to make it again with the "
                          "new defaults, or choose another output_dir")


def _changed_text(record: dict, config: dict, inputs: dict[str, str], defaults: list[str] | None = None) -> str:
    """What differs between a stage record (manifest or pending) and this run, as ' (changed: key: old -> new,
    ...)' with dotted keys (`flatten`, as a resumed run's check names them) and shortened values ('' when nothing
    recorded differs, e.g. only how paths were written). Recorded defaults are left out (`_refuse_changed_defaults`
    names those), unless they are all that changed and ``defaults`` (`changed_defaults`' lines) is given."""
    before = flatten({"config": without_defaults(record.get("config")), "inputs": record.get("inputs")})
    after = flatten({"config": without_defaults(config), "inputs": inputs})
    # With the recorded defaults (`DEFAULTS_KEY` beside each section's keys): a key left at its default shows
    # that value, not "unset".
    full_before = flatten({"config": record.get("config")})
    full_after = flatten({"config": config})

    def shown(side: dict, full: dict, key: str) -> str:
        if key in side:
            return _short(side[key])
        parts = key.split(".")  # each section records its defaults by dotted name: try each split
        for cut in range(len(parts) - 1, 0, -1):
            default = ".".join([*parts[:cut], DEFAULTS_KEY, *parts[cut:]])
            if default in full:
                return f"{_short(full[default])} (default)"
        return _short(_UNSET)

    changed = [f"{key}: {shown(before, full_before, key)} -> {shown(after, full_after, key)}"
               for key in sorted(set(before) | set(after)) if before.get(key, _UNSET) != after.get(key, _UNSET)]
    if changed:
        return f" (changed: {', '.join(changed)})"
    return f" (changed defaults: {'; '.join(defaults)})" if defaults else ""


_UNSET = object()  # a key one of the two settings lacks


def _short(value, limit: int = 40) -> str:
    text = "unset" if value is _UNSET else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
