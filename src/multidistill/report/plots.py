"""The report's figures: one function per PNG, each taking plain dicts and an output path.

Everything renders with the Agg backend, so reports build on headless machines and in CI.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

# Select the file-only backend before pyplot is imported: a report must never need a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import TwoSlopeNorm, to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from multidistill.evaluation.baseline import AT_BASELINE_MARK, BASELINE_MARGIN  # noqa: E402
from multidistill.evaluation.retention import RETENTION_RANGE, out_of_range, retention  # noqa: E402
from multidistill.evaluation.seeds import has_seeds, mean_sd, seed_averages  # noqa: E402
from multidistill.report.colours import PALETTE, palette, text_colour  # noqa: E402
from multidistill.report.stage_names import mean_label, stage_families, without_seed, without_seeds_label  # noqa: E402

DPI = 130
MAX_CURVES = 16  # more stage folders than this: seeds of one stage are drawn as their mean
RUNTIME_LABELS = {
    "pytorch_fp32": "PyTorch fp32",
    "pytorch_bf16": "PyTorch bf16",
    "onnx_fp32": "ONNX fp32",
    "onnx_int8": "ONNX int8",
}
RUNTIME_MARKERS = {"pytorch_fp32": "o", "pytorch_bf16": "s", "onnx_fp32": "^", "onnx_int8": "D"}
_SPARE_MARKERS = ["v", "P", "X", "*", "h", "<", ">"]


def runtime_label(runtime: str) -> str:
    """Human name of a runtime key, e.g. ``onnx_int8`` -> ``ONNX int8`` (unknown keys are shown as given)."""
    return RUNTIME_LABELS.get(runtime, runtime)


def short_name(name: str, width: int = 22, lines: int = 1) -> str:
    """``name`` wrapped to at most ``lines`` lines of ``width`` characters, the middle elided if longer.

    Model names are often paths or long recipe labels; the end (e.g. ``...-seed-3``) usually tells runs
    apart, so the middle is what gets dropped.
    """
    budget = width * lines
    if len(name) > budget:
        keep = budget - 1
        name = name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2:]
    if lines == 1:
        return name
    return "\n".join(textwrap.wrap(name, width, break_long_words=True, break_on_hyphens=True)[:lines])


_SEPARATORS = "_-./ "


def distinct_short_names(names: Sequence[str], width: int) -> list[str]:
    """`short_name` of each of ``names`` (one line of ``width``), kept apart where eliding the middle merges them.

    Names sharing a long prefix and suffix (``customer_support_ticket_routing_a_production``, ``..._b_...``) all
    elide to ``customer_s…roduction``; those keep the start of the name and everything after the shared prefix's
    last separator instead: ``custome…a_production``. Where that still merges some, the names are
    shown whole: long, but never two tasks under one label.
    """
    shown = [short_name(name, width) for name in names]
    groups: dict[str, set[str]] = {}
    for name, label in zip(names, shown, strict=True):
        groups.setdefault(label, set()).add(name)
    for members in groups.values():
        if len(members) < 2:
            continue
        prefix = os.path.commonprefix(sorted(members))
        cut = max(prefix.rfind(sep) for sep in _SEPARATORS) + 1 or len(prefix)
        for k, name in enumerate(names):
            if name in members:
                rest, head = name[cut:], width - 1 - len(name) + cut
                shown[k] = name[:head] + "…" + rest if head > 0 else "…" + short_name(rest, width - 1)
    return shown if len(set(shown)) == len(set(names)) else list(names)


_GENERIC_LEAVES = ("model", "onnx")


def _tails(name: str) -> list[str]:
    parts = [part for part in name.replace("\\", "/").split("/") if part] or [name]
    generic = len(parts) > 1 and parts[-1] in _GENERIC_LEAVES
    # A bare "model" tells nothing: a generic leaf is shown only together with its parent folder.
    tails = ["/".join(parts[-k - 1:-1]) for k in range(1, len(parts))] if generic else []
    return tails + ["/".join(parts[-k:]) for k in range(2 if generic else 1, len(parts) + 1)]


def display_names(names: Sequence[str]) -> dict[str, str]:
    """Shorter names that still tell ``names`` apart: paths keep only their last distinguishing components.

    ``runs/kd/student-6l/model`` and ``runs/kd/student-4l/model`` become ``student-6l`` and ``student-4l``:
    the shortest tail of path components (without a trailing ``model``/``onnx`` folder where possible)
    that no other name could also be shown as.
    """
    tails = {name: _tails(name) for name in names}
    shown = {}
    for name in names:
        taken = {t for other in names if other != name for t in tails[other]}
        shown[name] = next((t for t in tails[name] if t not in taken), name)
    return shown


def _with_colours(names: Sequence[str], colours: Mapping[str, Any] | None) -> dict[str, Any]:
    """``colours`` for ``names``; names it lacks get palette colours it does not use yet."""
    mapping = dict(colours or {})
    missing = [n for n in dict.fromkeys(names) if n not in mapping]
    if missing:
        used = {to_hex(c) for c in mapping.values()}
        spare = [c for c in PALETTE if to_hex(c) not in used] or list(PALETTE)
        mapping.update((name, spare[i % len(spare)]) for i, name in enumerate(missing))
    return mapping


def _markers(runtimes: Sequence[str]) -> dict[str, str]:
    spare = iter(_SPARE_MARKERS * 4)
    return {r: RUNTIME_MARKERS.get(r) or next(spare) for r in runtimes}


def _log_ticks(axis) -> None:
    # A range under a decade would otherwise get one tick or "6x10^0" labels; 1-2-5 plain numbers read better.
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_x(ax, values: Sequence[float], left: float = 0.08, right: float = 0.25) -> None:
    """Log x axis over ``values``, leaving ``left``/``right`` fractions of the width free for labels."""
    ax.set_xscale("log")
    _log_ticks(ax.xaxis)
    low, high = math.log10(min(values)), math.log10(max(values))
    total = max(high - low, 0.3) / (1 - left - right)
    centre_pad = (total * (1 - left - right) - (high - low)) / 2
    ax.set_xlim(10 ** (low - centre_pad - left * total), 10 ** (high + centre_pad + right * total))


# Candidate label offsets (points) around a point, nearest first: (dx, dy, horizontal, vertical alignment).
_AROUND = [(0, 8, "center", "bottom"), (0, -8, "center", "top"), (9, 5, "left", "bottom"),
           (-9, 5, "right", "bottom"), (9, -5, "left", "top"), (-9, -5, "right", "top")]
_AROUND += [(dx, dy, ha, "bottom" if dy > 0 else "top") for dist in (18, 28, 38)
            for dx, dy, ha in ((0, dist, "center"), (0, -dist, "center"), (dist, dist, "left"),
                               (-dist, dist, "right"), (dist, -dist, "left"), (-dist, -dist, "right"))]
_BESIDE = [(10, 0, "left", "center"), (10, 9, "left", "bottom"), (10, -9, "left", "top"),
           (-10, 0, "right", "center"), *_AROUND[6:]]


def _place_labels(fig, labels: list[tuple], obstacles: dict) -> int:
    """Move each label to the first candidate offset that overlaps no marker, placed label or axes edge.

    ``labels`` holds (annotation, axes, candidates) in priority order; ``obstacles`` maps an axes to the
    display boxes of its markers. A label placed away from its point gets a thin leader line; one with no
    free spot is hidden, since overlapping text is unreadable and the marker legend still names the runtime.
    Returns how many labels were hidden.
    """
    renderer = fig.canvas.get_renderer()
    taken = {ax: list(boxes) for ax, boxes in obstacles.items()}
    hidden = 0
    for label, ax, candidates in labels:
        frame = ax.get_window_extent(renderer)
        for dx, dy, ha, va in candidates:
            label.xyann = (dx, dy)
            label.set_ha(ha)
            label.set_va(va)
            box = label.get_window_extent(renderer).expanded(1.06, 1.15)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in taken.setdefault(ax, [])):
                taken[ax].append(box)
                if max(abs(dx), abs(dy)) > 12:
                    ax.annotate("", label.xy, xytext=(dx, dy), textcoords="offset points", zorder=2,
                                arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.6, "shrinkA": 0,
                                            "shrinkB": 5})
                break
        else:
            label.set_visible(False)
            hidden += 1
    return hidden


def _empty(ax, message: str) -> None:
    """A panel without data: the reason in its middle, no meaningless 0-1 ticks."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _finish(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight" also keeps legends placed below the axes, which tight_layout ignores.
    fig.savefig(out, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


def _positive(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def plot_score_vs_speed(models: dict[str, dict], out: str | Path, *, task: str | None = None,
                        score_label: str = "dev score", reference: str | None = None,
                        batch_size: int = 32, colours: Mapping[str, Any] | None = None) -> Path | None:
    """Score against latency (batch 1) and throughput (batch ``batch_size``): one point per model and runtime.

    ``models`` is benchmark.json's ``models`` mapping ({name: {score, runtimes: {runtime: {score?, ...}}}});
    a runtime's own score (an int8 model scores differently) wins over the model's. Colour identifies the
    model, the marker the runtime, and a model's runtimes are joined by a faint line. Points without a
    score cannot be placed and are left out. ``task`` (the timed task) goes in the title. Returns the PNG
    path, or None when no point has both a score and a timing.
    """
    points = []  # (model, runtime, score, latency, throughput)
    for name, model in models.items():
        for runtime, stats in (model.get("runtimes") or {}).items():
            score = stats.get("score") if isinstance(stats.get("score"), (int, float)) else model.get("score")
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                continue
            latency, throughput = _positive(stats.get("latency_ms_median")), _positive(
                stats.get("throughput_examples_per_s"))
            if latency or throughput:
                points.append((name, runtime, float(score), latency, throughput))
    if not points:
        return None
    names = list(dict.fromkeys(p[0] for p in points))
    runtimes = list(dict.fromkeys(p[1] for p in points))
    colour = _with_colours(names, colours)
    marker = _markers(runtimes)

    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), dpi=DPI)
    panels = [(axes[0], 3, "latency at batch 1, median (ms, log scale) — lower is faster", "latency"),
              (axes[1], 4, f"throughput at batch {batch_size} (examples/s, log scale) — higher is faster",
               "throughput")]
    scores = [p[2] for p in points]
    # Scores of distilled models are often within a point of each other; pad by the data's own spread.
    spread = max(max(scores) - min(scores), 0.01 * max(abs(v) for v in scores), 1e-3)
    display = display_names(names)
    labels: list[tuple] = []
    for ax, column, xlabel, kind in panels:
        shown = [p for p in points if p[column]]
        if not shown:
            _empty(ax, f"no {kind} measured")
            continue
        _log_x(ax, [p[column] for p in shown])
        ax.set_ylim(min(scores) - 0.35 * spread, max(scores) + 0.35 * spread)
        runtime_labels = []
        for name in names:
            mine = sorted((p for p in shown if p[0] == name), key=lambda p: p[column])
            if not mine:
                continue
            ax.plot([p[column] for p in mine], [p[2] for p in mine], color=colour[name], alpha=0.4, lw=1.2,
                    zorder=1)
            for point in mine:
                runtime, score, x = point[1], point[2], point[column]
                ax.scatter(x, score, s=70, marker=marker[runtime], color=colour[name], edgecolor="black",
                           linewidth=0.6, zorder=3)
                runtime_labels.append((ax.annotate(runtime_label(runtime), (x, score), xytext=(0, 8),
                                                   textcoords="offset points", fontsize=8, color="#222222",
                                                   zorder=4), ax, _AROUND))
            # The model's name once, beside its right-most point; placed before the runtime labels.
            labels.append((ax.annotate(short_name(display[name], 24), (mine[-1][column], mine[-1][2]),
                                       xytext=(10, 0), textcoords="offset points", fontsize=8.5,
                                       fontweight="bold", color=colour[name], zorder=4), ax, _BESIDE))
        labels += runtime_labels
        ax.set_xlabel(xlabel)
        ax.set_ylabel(score_label)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    axes[0].set_title("Score vs latency")
    axes[1].set_title("Score vs throughput")
    fig.suptitle(f"Quality vs speed (one point per model and runtime{f'; timed on {task}' if task else ''})",
                 fontsize=13)

    model_handles = [Line2D([], [], marker="o", ls="", color=colour[n], markeredgecolor="black", markersize=8,
                            label=short_name(n + (" (reference)" if n == reference else ""), 45, lines=2))
                     for n in names]
    runtime_handles = [Line2D([], [], marker=marker[r], ls="", color="#888888", markeredgecolor="black",
                              markersize=8, label=runtime_label(r)) for r in runtimes]
    fig.tight_layout()
    fig.legend(handles=model_handles, title="model (colour)", loc="upper right", bbox_to_anchor=(0.5, 0.0),
               ncol=1 if len(model_handles) <= 4 else 2, fontsize=9, frameon=False)
    fig.legend(handles=runtime_handles, title="runtime (marker)", loc="upper left", bbox_to_anchor=(0.52, 0.0),
               ncol=min(len(runtime_handles), 4), fontsize=9, frameon=False)
    # Marker boxes are only final once the layout is: 70 pt^2 markers are ~8.4 pt wide, plus a margin.
    half = (math.sqrt(70) / 2 + 1) * fig.dpi / 72
    obstacles: dict = {}
    for label, ax, _ in labels:
        cx, cy = ax.transData.transform(label.xy)
        obstacles.setdefault(ax, []).append(Bbox.from_extents(cx - half, cy - half, cx + half, cy + half))
    if _place_labels(fig, labels, obstacles):
        fig.text(0.995, 0.995, "some point labels were left out where they would overlap;\nthe marker shows the "
                 "runtime", ha="right", va="top", fontsize=8, color="#666666")
    return _finish(fig, out)


MAX_BARS = 48  # retention bars (rows x task groups) past which, or past MAX_BAR_ROWS rows, a heatmap is drawn
MAX_BAR_ROWS = 6


def plot_retention(rows: dict[str, dict], reference: str, tasks: Sequence[str], out: str | Path,
                   colours: Mapping[str, Any] | None = None, split: str = "dev",
                   baseline: Mapping[str, Any] | None = None) -> Path | None:
    """Per task plus "average": the % of the reference row's main score each other row keeps.

    ``rows`` maps a row name to {"main": {task: score}}; every value is `retention` (the "average" group over the
    tasks a row shares with the reference). A task whose reference score is not positive has no meaningful ratio
    (e.g. a CoLA MCC near 0) and is marked "n/a". Grouped bars while they stay readable; past `MAX_BAR_ROWS` rows
    or `MAX_BARS` bars, a heatmap (rows x tasks) instead. Returns None when there is no row besides the reference.

    ``baseline`` (the report's trivial baseline: {"name", "main": {task: score}}) draws what a constant predictor
    keeps in each group (a line behind the bars), and a row's ``at_baseline`` tasks get `AT_BASELINE_MARK`: a
    retention a constant also reaches (MRPC's F1 of always answering "paraphrase") is not read as quality kept.
    """
    others = [name for name in rows if name != reference]
    if not others:
        return None
    base = rows[reference]
    groups = [*tasks, "average"]

    def value(row: dict, group: str) -> float | None:
        kept = retention(row.get("main") or {}, base.get("main") or {}, tasks if group == "average" else [group])
        return 100.0 * kept.ratio if kept else None

    values = {name: [value(rows[name], group) for group in groups] for name in others}
    floor = Floor(str(baseline.get("name") or "trivial baseline"),
                  [value(baseline, group) for group in groups],
                  {name: {g for g, group in enumerate(groups) if group in (rows[name].get("at_baseline") or ())}
                   for name in others}) if baseline and isinstance(baseline.get("main"), Mapping) else None
    if len(others) > MAX_BAR_ROWS or len(others) * len(groups) > MAX_BARS:
        return _retention_heatmap(values, groups, reference, split, out, floor)
    return _retention_bars(values, groups, reference, split, out, _with_colours([reference, *others], colours),
                           floor)


@dataclass(frozen=True)
class Floor:
    """What the retention figure shows of the trivial baseline: its retention per group (None: not scored there)
    and, per row, the groups whose score is no better than it (their values carry `AT_BASELINE_MARK`)."""

    name: str
    values: list[float | None]
    marked: dict[str, set[int]]

    def mark(self, name: str, group: int) -> str:
        return AT_BASELINE_MARK if group in self.marked.get(name, ()) else ""

    @property
    def any_marked(self) -> bool:
        return any(self.marked.values())

    def note(self) -> str:
        return (f"{AT_BASELINE_MARK}: within {BASELINE_MARGIN} of the {self.name}'s score (main metric), "
                "no better than a constant")


def _retention_bars(values: dict[str, list[float | None]], groups: list[str], reference: str, split: str,
                    out: str | Path, colour: Mapping[str, Any], floor: Floor | None = None) -> Path:
    """Grouped bars, one per row and group, each labelled with its value where the label never meets the 100%
    line: inside a bar up to 100%, above a bar past it (or too short to hold it). The axis spans at most
    `RETENTION_RANGE`; a bar past it is cut at its edge and hatched, its label still the real value. A ``floor``
    is a grey segment across each group, behind its bars (so it never crosses a label) and past their ends."""
    others = list(values)
    width = min(0.8 / len(others), 0.3)
    fig_width = max(8.0, 1.5 + len(groups) * (0.45 + width * len(others) * 1.3))
    fig, ax = plt.subplots(figsize=(min(fig_width, 18.0), 5.5), dpi=DPI)
    low, high = RETENTION_RANGE
    known = [pct for row in values.values() for pct in row if pct is not None]
    floors = [pct for pct in (floor.values if floor else []) if pct is not None]
    heights = [min(max(pct, low), high) for pct in [*known, *floors]]
    vertical = len(others) > 2
    # A label's extent in data units, from the axes' height before layout (layout only makes the axes taller).
    longest = max([5, *(len(f"{pct:.1f}") for pct in known)])  # "100.0"; a cut bar's "-3363.6" is longer
    label_pt = 8 * (0.62 * longest if vertical else 1.2)  # its length at 8 pt rotated, else its height
    top, bottom = max([100.0, *heights]), min([0.0, *heights])
    span = (top - bottom) * 1.1
    axes_pt = ax.get_position().height * fig.get_figheight() * 72
    extent, pad = span * label_pt / axes_pt, span * 4 / axes_pt
    ax.set_ylim(bottom - ((extent + 2 * pad) if bottom < 0 else 0), max(top * 1.05, top + extent + 2 * pad))
    labelled: set[str] = set()
    for k, name in enumerate(others):
        offset = (k - (len(others) - 1) / 2) * width
        for g, pct in enumerate(values[name]):
            x = g + offset
            if pct is None:
                ax.text(x, pad, "n/a", ha="center", va="bottom", fontsize=8, rotation=90, color="#666666")
                continue
            height = min(max(pct, low), high)
            ax.bar(x, height, width * 0.92, color=colour[name], edgecolor="black", linewidth=0.5,
                   hatch="///" if out_of_range(pct / 100) else None,
                   label=None if name in labelled else short_name(name, 34, lines=2))
            labelled.add(name)
            inside = 0 < pct <= 100 and pct >= extent + 2 * pad
            if inside:
                y, va, ink = pct - pad, "top", text_colour(colour[name])
            elif height < 0:
                y, va, ink = height - pad, "top", "black"
            else:
                y, va, ink = height + pad, "bottom", "black"
            ax.text(x, y, f"{pct:.1f}{floor.mark(name, g) if floor else ''}", ha="center", va=va, fontsize=8,
                    color=ink, fontweight="bold" if inside else "normal", rotation=90 if vertical else 0)
    ax.axhline(100, color="black", ls="--", lw=1.1, label="reference = 100%", zorder=0.5)
    if floors:
        reach = width * len(others) / 2 + 0.08
        drawn = [(g, min(max(pct, low), high)) for g, pct in enumerate(floor.values) if pct is not None]
        # Solid grey: apart from the reference's dashed black line at 100%.
        ax.hlines([y for _, y in drawn], [g - reach for g, _ in drawn], [g + reach for g, _ in drawn],
                  colors="#777777", linestyles="solid", lw=2.4, zorder=0.9,
                  label=f"{short_name(floor.name, 40)} (a constant predictor)")
    ax.axvline(len(groups) - 1.5, color="#999999", lw=0.8)
    _task_groups_axis(ax, groups, split)
    ax.set_ylabel("retention (% of reference score)")
    cut = any(out_of_range(pct / 100) for pct in known)
    ax.set_title(f"Quality kept by each model vs {short_name(reference, 60)}"
                 + ("\n(hatched bars run past the axis, cut at its edge: their label is the value)" if cut else "")
                 + (f"\n({floor.note()})" if floor and floor.any_marked else ""))
    return _finish_with_legend_below(fig, ax, out)


def _retention_heatmap(values: dict[str, list[float | None]], groups: list[str], reference: str, split: str,
                       out: str | Path, floor: Floor | None = None) -> Path:
    """Rows x task groups, each cell its retention % (red below the reference, blue above), its value written in
    black or white by the cell's brightness: readable where dozens of bars are not. With a ``floor``, its values
    are one more row, last, and the cells no better than it carry `AT_BASELINE_MARK`."""
    if floor:
        values = {**values, f"{floor.name} (a constant)": floor.values}
    names = list(values)
    grid = np.array([[np.nan if v is None else v for v in values[name]] for name in names], dtype=float)
    known = grid[~np.isnan(grid)]
    low, high = (float(known.min()), float(known.max())) if known.size else (99.0, 101.0)
    # The colours stop at RETENTION_RANGE (a cell past it takes the end colour, its text the value): one -3364%
    # would otherwise wash every other cell out to white.
    low, high = max(low, RETENTION_RANGE[0]), min(high, RETENTION_RANGE[1])
    norm = TwoSlopeNorm(vcenter=100.0, vmin=min(low, 99.0), vmax=max(high, 101.0))
    cmap = colormaps["RdBu"].with_extremes(bad="#eeeeee")
    fig, ax = plt.subplots(figsize=(min(max(7.0, 3.5 + 0.8 * len(groups)), 18.0), max(3.0, 1.6 + 0.4 * len(names))),
                           dpi=DPI)
    image = ax.imshow(np.ma.masked_invalid(np.clip(grid, norm.vmin, norm.vmax)), cmap=cmap, norm=norm, aspect="auto")
    for (r, g), pct in np.ndenumerate(grid):
        text = "n/a" if np.isnan(pct) else f"{pct:.1f}{floor.mark(names[r], g) if floor else ''}"
        ink = "#666666" if np.isnan(pct) else text_colour(cmap(norm(min(max(pct, norm.vmin), norm.vmax))))
        ax.text(g, r, text, ha="center", va="center", fontsize=8, color=ink)
    ax.axvline(len(groups) - 1.5, color="white", lw=3)
    if floor:
        ax.axhline(len(names) - 1.5, color="white", lw=3)  # the baseline's row apart from the models'
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([short_name(name, 40) for name in names], fontsize=9)
    _task_groups_axis(ax, groups, split)
    ax.grid(False)
    fig.colorbar(image, ax=ax, pad=0.02, fraction=0.04).set_label("retention % (100 = reference)")
    ax.set_title(f"Quality kept by each model vs {short_name(reference, 60)} (% of its score)"
                 + (f"\n({floor.note()})" if floor and floor.any_marked else ""))
    fig.tight_layout()
    return _finish(fig, out)


def _task_groups_axis(ax, groups: Sequence[str], split: str) -> None:
    """The x axis of a per-task figure: one tick per group ("average", the last, in bold) and a y grid."""
    ax.set_xticks(range(len(groups)))
    long_ticks = len(groups) > 7 or max(len(g) for g in groups) > 10
    ax.set_xticklabels(distinct_short_names(groups, 20), rotation=30 if long_ticks else 0,
                       ha="right" if long_ticks else "center")
    ax.get_xticklabels()[-1].set_fontweight("bold")
    ax.set_xlabel(f"task (main {split} metric)")
    ax.grid(True, axis="y", alpha=0.35)
    ax.set_axisbelow(True)


def _finish_with_legend_below(fig, ax, out: str | Path) -> Path:
    handles, names = ax.get_legend_handles_labels()
    fig.tight_layout()
    # Below the figure (kept by bbox_inches="tight"), so neither the plot nor rotated task names are covered.
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(names), 3), fontsize=9,
               frameon=False)
    return _finish(fig, out)


def plot_seed_scores(rows: dict[str, dict], tasks: Sequence[str], out: str | Path,
                     colours: Mapping[str, Any] | None = None, split: str = "dev") -> Path | None:
    """Per task plus "average": each row's score as a marker with a bar of ± one standard deviation over its
    seeds, and each seed's model as a small dot beside it, so a difference can be read against the seeds' spread.

    ``rows`` maps a row name to {"main": {task: score}, "average": float, "runs": {task: [score per seed]}};
    rows without runs are drawn as one hollow marker (a single model). Returns None when no row has several seeds.
    """
    if not any(has_seeds(row) for row in rows.values()):
        return None
    names = list(rows)
    groups = [*tasks, "average"]
    colour = _with_colours(names, colours)
    width = min(0.8 / len(names), 0.25)
    fig, ax = plt.subplots(figsize=(min(max(8.0, 1.5 + len(groups) * (0.5 + width * len(names) * 1.6)), 18.0), 5.5),
                           dpi=DPI)
    shown: list[float] = []
    for k, name in enumerate(names):
        row = rows[name]
        runs = row.get("runs") or {}
        offset = (k - (len(names) - 1) / 2) * width
        for g, group in enumerate(groups):
            seeds = seed_averages(runs, tasks) if group == "average" else runs.get(group)
            centre = row.get("average") if group == "average" else (row.get("main") or {}).get(group)
            if centre is None:
                continue
            x = g + offset
            label = short_name(name, 34, lines=2) if g == 0 else None
            if seeds and len(seeds) > 1:
                mean, sd = mean_sd(seeds)
                ax.errorbar(x, mean, yerr=sd, fmt="o", color=colour[name], markersize=7, capsize=3,
                            markeredgecolor="black", markeredgewidth=0.5, label=label, zorder=3)
                ax.scatter([x + width * 0.3] * len(seeds), seeds, s=10, color=colour[name], alpha=0.8,
                           edgecolors="none", zorder=2)
                shown += [mean - sd, mean + sd, *seeds]
            else:
                ax.plot(x, centre, "o", markerfacecolor="white", markeredgecolor=colour[name], markeredgewidth=1.5,
                        markersize=7, label=label, zorder=3)
                shown.append(centre)
    low, high = min(shown), max(shown)
    pad = max(high - low, 0.01) * 0.12
    ax.set_ylim(low - pad, high + pad)
    ax.axvline(len(tasks) - 0.5, color="#999999", lw=0.8)
    for g in range(len(groups) - 1):
        ax.axvline(g + 0.5, color="#dddddd", lw=0.6, zorder=0)
    _task_groups_axis(ax, groups, split)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(f"{split} score")
    ax.set_title("Scores with each seed's model (filled: mean ± sd over seeds, dots: seeds; hollow: one model)")
    return _finish_with_legend_below(fig, ax, out)


def _ema(values: Sequence[float], weight: float) -> list[float]:
    smoothed, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        smoothed.append(last)
    return smoothed


def mean_over_seeds(series: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """Stages named ``<name>-seed-<n>`` merged into one ``<name> (mean of k seeds)`` curve: at each step every seed
    logged, the mean of their values. Other stages are kept as they are."""
    groups: dict[str, list[str]] = {}
    for stage in series:
        groups.setdefault(without_seed(stage), []).append(stage)
    merged = {}
    for name, members in groups.items():
        if len(members) == 1 and members[0] == name:
            merged[name] = list(series[name])
            continue
        by_step = [dict(series[m]) for m in members]
        steps = sorted(set.intersection(*(set(d) for d in by_step)))
        label = mean_label(name, len(members)) if len(members) > 1 else members[0]
        merged[label] = [(step, sum(d[step] for d in by_step) / len(by_step)) for step in steps]
    return merged


_STAGE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
_LINE_STYLES = ("-", "--", ":", "-.")
NUDGE = 0.012  # dev points of neighbouring stages are drawn this fraction of the x axis apart
NORMALISE_RATIO = 3.0  # stages whose lengths differ more than this are drawn against the fraction of their training


def _stage_styles(stages: Sequence[str], colour: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """(line style, marker) of each stage: each stage its own marker, and stages of one colour (one model's per-task
    stages) each their own line style, so no two curves look alike."""
    shared: dict[str, int] = {}
    styles = {}
    for k, stage in enumerate(stages):
        hue = to_hex(colour[stage])
        styles[stage] = (_LINE_STYLES[shared.get(hue, 0) % len(_LINE_STYLES)], _STAGE_MARKERS[k % len(_STAGE_MARKERS)])
        shared[hue] = shared.get(hue, 0) + 1
    return styles


def _draw_loss(ax, loss: Mapping[str, Sequence[tuple[int, float]]], colour: Mapping[str, Any],
               styles: Mapping[str, tuple[str, str]] | None = None, scale: Mapping[str, float] | None = None) -> None:
    """Loss curves, x divided by each stage's ``scale`` (its length, when drawn against a fraction of training)."""
    all_values = [v for series in loss.values() for _, v in series]
    for stage, series in loss.items():
        steps, values = zip(*series, strict=True)
        x = [step / (scale or {}).get(stage, 1) for step in steps]
        line, marker = (styles or {}).get(stage, ("-", "."))
        if len(values) > 30:
            ax.plot(x, values, color=colour[stage], alpha=0.22, lw=0.8, ls=line)
            ax.plot(x, _ema(values, 0.85), color=colour[stage], lw=1.8, ls=line)
        else:
            ax.plot(x, values, color=colour[stage], lw=1.8, ls=line, marker=marker, markersize=3)
    # Distillation losses often fall by orders of magnitude; a log axis keeps the late steps visible.
    if min(all_values) > 0 and max(all_values) / min(all_values) > 20:
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)


def _draw_dev(ax, dev: Mapping[str, Sequence[tuple[int, float]]], colour: Mapping[str, Any],
              styles: Mapping[str, tuple[str, str]] | None = None, scale: Mapping[str, float] | None = None) -> None:
    """Dev curves, each stage its own marker and nudged sideways by about a marker's width (1.2% of the axis) from
    the next: stages that scored the same at the same point stay visible side by side instead of hiding each other.
    """
    span = max(step / (scale or {}).get(stage, 1) for stage, series in dev.items() for step, _ in series) or 1.0
    nudge = NUDGE * span
    for k, (stage, series) in enumerate(dev.items()):
        steps, values = zip(*series, strict=True)
        shift = (k - (len(dev) - 1) / 2) * nudge
        line, marker = (styles or {}).get(stage, ("-", "o"))
        ax.plot([step / (scale or {}).get(stage, 1) + shift for step in steps], values, color=colour[stage], lw=1.8,
                ls=line, marker=marker, markersize=5, markeredgecolor="black", markeredgewidth=0.4)


def dev_label(tasks: Mapping[str, Sequence[str]], stages: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The dev panel's y label and a legend note per stage, from the tasks each stage was scored on: a stage of one
    task is that task's score, not a "mean over tasks"."""
    known = {stage: tuple(tasks[stage]) for stage in stages if tasks.get(stage)}
    sizes = {len(names) for names in known.values()}
    if len(known) == len(stages) and len(set(known.values())) == 1 and sizes == {1}:
        return f"dev {next(iter(known.values()))[0]} (main metric)", {}
    notes = {stage: f"{names[0]} only" for stage, names in known.items() if len(names) == 1 and max(sizes) > 1}
    if sizes == {1}:
        return "dev score (main metric of the stage's task)", notes
    return "dev score (main metric; mean over the stage's tasks)", notes


def _plot_families(loss: dict, dev: dict, stages: list[str], out: str | Path) -> Path:
    """One row per stage family (loss | dev), coloured by member (the same target has the same colour in every
    row), each row with its own small legend: dozens of curves stay readable."""
    families = stage_families(stages)
    # Colour by member without its "(mean of k seeds)": books is one colour whether its rows had seeds or not.
    members = list(dict.fromkeys(without_seeds_label(label) for group in families.values() for _, label in group))
    member_colour = dict(zip(members, palette(len(members)), strict=True))
    fig, axes = plt.subplots(len(families), 2, figsize=(14, 2.6 * len(families) + 0.8), dpi=DPI, squeeze=False)
    for (family, group), (ax_loss, ax_dev) in zip(families.items(), axes, strict=True):
        colour = {stage: member_colour[without_seeds_label(label)] for stage, label in group}
        styles = _stage_styles([stage for stage, _ in group], colour)
        family_loss = {stage: loss[stage] for stage, _ in group if stage in loss}
        family_dev = {stage: dev[stage] for stage, _ in group if stage in dev}
        last = max(step for series in (*family_loss.values(), *family_dev.values()) for step, _ in series)
        for ax, series, draw, what in ((ax_loss, family_loss, _draw_loss, "train loss"),
                                       (ax_dev, family_dev, _draw_dev, "dev score")):
            if series:
                draw(ax, series, colour, styles)
                ax.set_xlim(0, (1.03 + NUDGE * len(group) / 2) * max(last, 1))  # both panels: one step axis
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(True, alpha=0.35)
            else:
                _empty(ax, f"no {what} logged")
            ax.set_ylabel(what, fontsize=9)
        ax_loss.set_title(short_name(family, 60), loc="left", fontsize=10, fontweight="bold")
        if len(group) > 1 or group[0][1] != family:
            handles = [Line2D([], [], color=colour[stage], lw=2.2, ls=styles[stage][0], marker=styles[stage][1],
                              label=short_name(label, 40)) for stage, label in group]
            ax_dev.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                          frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle("Training curves per stage family (loss smoothed where long; dev: main metric, mean over each "
                 "stage's tasks)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # half an inch on top for the title
    return _finish(fig, out)


def plot_training_curves(loss: dict[str, list[tuple[int, float]]], dev: dict[str, list[tuple[int, float]]],
                         out: str | Path, colours: Mapping[str, Any] | None = None,
                         tasks: Mapping[str, Sequence[str]] | None = None) -> Path | None:
    """Train loss and dev score during training, one line per stage folder (same colour and style in both panels).

    ``loss`` and ``dev`` map a stage name to (step, value) pairs; ``tasks`` the tasks each stage's dev score is
    over (its legend says "<task> only" for a one-task stage among multi-task ones). Long, noisy loss curves are
    drawn faint with an exponential moving average on top, like TensorBoard's smoothing. Stages whose lengths differ
    more than `NORMALISE_RATIO` times share an x axis of the fraction of each one's training (its last logged step
    is 1, and the legend gives its steps), so a short student is not squeezed against long teachers. With more than
    `MAX_CURVES` stages (a recipe with several seeds per stage, or a target per stage), each stage's seeds are drawn
    as their mean (`mean_over_seeds`) and each family of stages (`stage_families`: ``student-books``,
    ``student-dvd``, ...) gets a row of its own, coloured by member instead of by ``colours``. Returns None without
    data.
    """
    # Non-finite points (a dev average over no labelled task is NaN) draw nothing: drop them, and empty series.
    loss = {k: finite for k, v in loss.items() if (finite := [(x, y) for x, y in v if math.isfinite(y)])}
    dev = {k: finite for k, v in dev.items() if (finite := [(x, y) for x, y in v if math.isfinite(y)])}
    crowded = len(dict.fromkeys([*loss, *dev])) > MAX_CURVES
    if crowded:
        loss, dev = mean_over_seeds(loss), mean_over_seeds(dev)
        loss, dev = {k: v for k, v in loss.items() if v}, {k: v for k, v in dev.items() if v}
    stages = list(dict.fromkeys([*loss, *dev]))
    if not stages:
        return None
    if crowded:
        return _plot_families(loss, dev, stages, out)
    colour = _with_colours(stages, colours)
    styles = _stage_styles(stages, colour)
    lengths = {stage: max(step for step, _ in [*loss.get(stage, []), *dev.get(stage, [])]) for stage in stages}
    normalised = max(lengths.values()) > NORMALISE_RATIO * max(min(lengths.values()), 1)
    scale = {stage: max(length, 1) for stage, length in lengths.items()} if normalised else None
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=DPI)

    if loss:
        _draw_loss(ax_loss, loss, colour, styles, scale)
        ax_loss.set_ylabel("train loss (smoothed where long)")
    else:
        _empty(ax_loss, "no train/loss scalars found\n(stage tensorboard folders)")
    ax_loss.set_title("Training loss")

    label, notes = dev_label(tasks or {}, stages)
    if dev:
        _draw_dev(ax_dev, dev, colour, styles, scale)
        ax_dev.set_ylabel(label)
    else:
        _empty(ax_dev, "no dev evaluations found\n(train_history.json)")
    ax_dev.set_title("Dev score during training")
    for ax, has_data in ((ax_loss, loss), (ax_dev, dev)):
        if has_data:
            # One x range for both panels, from 0: a stage's dev points line up with its loss curve.
            ax.set_xlim(0, (1.03 + NUDGE * len(dev) / 2) * (1.0 if normalised else max(lengths.values())))
            if normalised:
                ax.set_xlabel("fraction of the stage's training (1 = its last logged step)")
            else:
                ax.set_xlabel("optimizer step")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.35)
    fig.suptitle("Training curves per stage", fontsize=13)
    fig.tight_layout()

    def legend_label(stage: str) -> str:
        extra = [note for note in (notes.get(stage), f"{lengths[stage]} steps" if normalised else None) if note]
        return f"{stage} ({'; '.join(extra)})" if extra else stage

    labels = {stage: legend_label(stage) for stage in stages}
    wide = max(len(text) for text in labels.values()) > 40  # "<stage> (mean of 3 seeds)": wider legend columns
    handles = [Line2D([], [], color=colour[s], lw=2.2, ls=styles[s][0], marker=styles[s][1], markersize=6,
                      markeredgecolor="black", markeredgewidth=0.4, label=short_name(labels[s], 56 if wide else 40))
               for s in stages]
    fig.legend(handles=handles, title="stage folder", loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(stages), 3 if wide else 4), fontsize=9, frameon=False)
    return _finish(fig, out)
