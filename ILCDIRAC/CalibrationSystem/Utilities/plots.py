"""The pictures delivered with a calibration's results (PNG bytes, matplotlib's Agg backend).

What a physicist checks, one question per picture:
- ``phase_plot``: did each phase's observable reach its target within the requested accuracy?
  Per phase one panel, observable/target per step with its statistical error, the accepted band
  shaded.
- ``constants_plot``: how did each constant move, and how well is it known? Per constant one
  panel, the value each step ran with, the final value with its uncertainty.
- ``workers_plot``: which workers lag? Per step, when each worker's result arrived after the step
  opened, the moment the step closed, workers that had not reported by then, and workers that
  were resubmitted.

Pure functions of plain data (stored steps, readings, result arrival times) that return the
matplotlib figure (so tests can read back what is drawn); ``png`` makes the file.
"""
from __future__ import annotations

import datetime
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ILCDIRAC.CalibrationSystem.logic.progress import Reading

#: Panels per row in the small-multiple figures.
COLUMNS = 3
PANEL_SIZE = (4.2, 2.8)
MARKERS = "os^Dv<>"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure) -> bytes:
    """The figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure)
    return buffer.getvalue()


def _grid(count: int, title: str):
    """A figure with ``count`` panels, COLUMNS to a row, constrained layout (no overlaps)."""
    plt = _pyplot()
    rows, columns = max(1, math.ceil(count / COLUMNS)), max(1, min(count, COLUMNS))
    size = (PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + 0.6)
    figure, axes = plt.subplots(rows, columns, figsize=size,
                                layout="constrained", squeeze=False)
    figure.suptitle(title)
    panels = list(axes.flat)
    for unused in panels[count:]:
        unused.set_visible(False)
    return figure, panels[:count]


def _integer_steps(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _message(title: str, text: str):
    """A figure that says why there is nothing to draw (rather than an empty file)."""
    figure = _pyplot().figure(figsize=(6, 2), layout="constrained")
    figure.suptitle(title)
    figure.text(0.5, 0.4, text, ha="center", va="center")
    return figure


def phase_plot(calibrationID: int, readings: Sequence[Reading]):
    """Per phase, observable/target per step with error bars, and the accepted band 1 +- accuracy."""
    title = f"Calibration {calibrationID}: each phase's observables against their targets"
    phases = sorted({r.phase for r in readings}, key=lambda key: tuple(map(int, key.split("."))))
    if not phases:
        return _message(title, "no phase with a target was measured (single-pass phases only)")
    # one style per observable name across all panels, so one legend beside them explains all
    observables = sorted({r.observable for r in readings})
    style = {name: (f"C{index % 10}", MARKERS[index % len(MARKERS)]) for index, name in enumerate(observables)}
    figure, panels = _grid(len(phases), title)
    for axis, key in zip(panels, phases, strict=True):
        mine = [r for r in readings if r.phase == key]
        band, steps = mine[0].band, sorted({r.step for r in mine})
        axis.axhspan(1 - band, 1 + band, color="tab:green", alpha=0.15, label="accepted band (requested accuracy)")
        axis.axhline(1.0, color="grey", lw=0.8)
        names = sorted({r.observable for r in mine})
        for index, observable in enumerate(names):
            series = sorted((r for r in mine if r.observable == observable), key=lambda r: r.step)
            offset = (index - (len(names) - 1) / 2) * 0.08  # side by side: no error bar hides another
            color, marker = style[observable]
            axis.errorbar([r.step + offset for r in series], [r.ratio for r in series],
                          yerr=[r.ratioError for r in series], color=color, marker=marker, ms=4, capsize=2, lw=1,
                          label=observable)
        axis.set_title(f"{key} {mine[0].phaseName} (accuracy {100 * band:.2g} %)", fontsize=9)
        axis.set_xlabel("step")
        axis.set_ylabel("observable / target")
        axis.set_xlim(steps[0] - 0.6, steps[-1] + 0.6)
        _step_ticks(axis, steps)
    _figure_legend(figure, panels)
    return figure


def _step_ticks(axis, steps: Sequence[int]) -> None:
    """Integer step numbers only, at most about ten of them."""
    every = max(1, math.ceil(len(range(steps[0], steps[-1] + 1)) / 10))
    axis.set_xticks(range(steps[0], steps[-1] + 1, every))


def _figure_legend(figure, panels) -> None:
    """One legend below the panels (clear of the data and the title) with every label used in any of them."""
    entries: dict[str, Any] = {}
    for axis in panels:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    figure.legend(list(entries.values()), list(entries), fontsize=8, loc="outside lower center",
                  ncol=min(len(entries), 4))


def _first(value: Any) -> float:
    """A constant's fitted value (the first of a list such as CalibrECAL = [thin, thick])."""
    return float(value[0] if isinstance(value, (list, tuple)) else value)


def constants_plot(calibrationID: int, steps: Sequence[Mapping[str, Any]], final: Mapping[str, Any],
                   uncertainties: Mapping[str, float]):
    """Per constant that moved, the value each step ran with (with the uncertainty of the step
    that set it) and the final value with its uncertainty."""
    title = f"Calibration {calibrationID}: constants per step (error bars: statistical uncertainty)"
    names = sorted(name for name in final if any(_first(s["Constants"].get(name, final[name])) != _first(final[name])
                                                 for s in steps) or name in uncertainties)
    if not names or not steps:
        return _message(title, "no constant changed")
    figure, panels = _grid(len(names), title)
    finalStep = steps[-1]["Step"] + 1
    for axis, name in zip(panels, names, strict=True):
        numbers, values, errors, error = [], [], [], 0.0
        for s in steps:
            numbers.append(s["Step"])
            values.append(_first(s["Constants"].get(name, final[name])))
            errors.append(error)
            error = ((s.get("Outcome") or {}).get("uncertainties") or {}).get(name, error)
        axis.errorbar(numbers, values, yerr=errors, marker="o", ms=4, capsize=2, lw=1, label="value the step ran with")
        axis.errorbar([finalStep], [_first(final[name])], yerr=[uncertainties.get(name, 0.0)], marker="*", ms=9,
                      capsize=3, color="tab:red", lw=0, elinewidth=1.2, label="final")
        shape = f" (first of {len(final[name])} values)" if isinstance(final[name], (list, tuple)) else ""
        axis.set_title(name + shape, fontsize=9)
        axis.set_xlabel("step (last: final)")
        axis.set_ylabel("value (steering units)")
        axis.ticklabel_format(axis="y", useOffset=False, style="plain")
        _integer_steps(axis)
    _figure_legend(figure, panels[:1])
    return figure


def workers_plot(calibrationID: int, steps: Sequence[Mapping[str, Any]],
                 received: Sequence[tuple[int, int, datetime.datetime]], resubmissions: Mapping[int, int],
                 numberOfWorkers: int):
    """Per step, each result's arrival (seconds after the step opened), the step's close, and how
    many workers had not reported by then; results of resubmitted workers stand out."""
    title = f"Calibration {calibrationID}: when each worker reported"
    if not steps:
        return _message(title, "no step was run")
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(7.0, 0.45 * len(steps) + 4), 4.5), layout="constrained")
    figure.suptitle(title)
    opened = {s["Step"]: s["OpenTime"] for s in steps}
    normal: list[tuple[float, float]] = []
    again: list[tuple[float, float]] = []
    slowest: dict[int, tuple[float, int]] = {}
    for step, worker, moment in received:
        if step in opened:
            point = (step, (moment - opened[step]).total_seconds())
            (again if resubmissions.get(worker, 0) else normal).append(point)
            slowest[step] = max(slowest.get(step, (-1.0, 0)), (point[1], worker))
    if normal:
        axis.scatter(*np.transpose(normal), s=14, color="tab:blue", alpha=0.7, label="result received")
    if again:
        axis.scatter(*np.transpose(again), s=30, facecolors="none", edgecolors="tab:orange", lw=1.2,
                     label="result of a resubmitted worker")
    closed = [(s["Step"], (s["CloseTime"] - s["OpenTime"]).total_seconds()) for s in steps if s.get("CloseTime")]
    if closed:
        axis.scatter(*np.transpose(closed), marker="_", s=300, color="black", lw=1.5, label="step closed")
    counts = {step: 0 for step in opened}
    for step, _, _ in received:
        counts[step] = counts.get(step, 0) + 1
    missing = [(step, seconds, numberOfWorkers - counts.get(step, 0)) for step, seconds in closed
               if counts.get(step, 0) < numberOfWorkers]
    if missing:
        # right of the close marker (the last result's label is left of it)
        axis.scatter([m[0] + 0.3 for m in missing], [m[1] for m in missing], marker="x", s=30, color="tab:red",
                     label="workers without a result at close (number)")
        for step, seconds, count in missing:
            axis.annotate(str(count), (step + 0.3, seconds), xytext=(4, 0), textcoords="offset points", fontsize=7,
                          va="center", color="tab:red")
    for step, (seconds, worker) in slowest.items():  # who the step waited for last
        axis.annotate(f"w{worker}", (step, seconds), xytext=(-11, 0), textcoords="offset points", fontsize=7,
                      ha="right", va="center", color="dimgrey")
    axis.set_xlabel("step (label: the worker whose result came last)")
    axis.set_ylabel("seconds after the step opened")
    axis.set_ylim(bottom=0)
    numbers = sorted(opened)
    axis.set_xlim(numbers[0] - 0.8, numbers[-1] + 0.8)  # room for the labels left and right of each step
    _integer_steps(axis)
    figure.legend(fontsize=8, loc="outside lower center", ncol=2)
    return figure
