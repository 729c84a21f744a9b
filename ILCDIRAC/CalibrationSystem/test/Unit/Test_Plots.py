"""The result plots draw what the calibration measured, readably.

A small real calibration (ECAL and HCAL digitisation, legacy update rule so that phases take
several steps) runs in-process on emulated samples; the figures are then read back: every point
must be the stored measurement over its target (computed here from the sample energies), every
constant the value its step ran with, every result one arrival; and no two labels may overlap,
legends outside the data.
"""
from __future__ import annotations

import datetime
import io
import itertools

import matplotlib.image
import pytest

from ILCDIRAC.CalibrationSystem.localdirac.configurations import CONFIGURATIONS
from ILCDIRAC.CalibrationSystem.localdirac.inprocess import (
    PARTICLES,
    make_samples,
    run_calibration,
)
from ILCDIRAC.CalibrationSystem.logic.progress import readings
from ILCDIRAC.CalibrationSystem.logic.results import final_uncertainties
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import K0L_MASS
from ILCDIRAC.CalibrationSystem.Utilities.plots import (
    constants_plot,
    phase_plot,
    png,
    workers_plot,
)

ACCURACY = 0.02


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plots")
    truth = CONFIGURATIONS[0].truth()
    settings = {"detectorModel": truth.name, "numberOfJobs": 3, "marlinExecutable": "marlin-emulator",
                "strategy": "legacy", "phaseSequence": ["1.0", "1.1"], "digitisationAccuracy": ACCURACY,
                **make_samples(truth, folder, {"gamma": (3, 300), "kaon": (3, 300)})}
    outcome = run_calibration(settings, folder / "run")
    assert outcome.status == "finished", outcome.reason
    db = outcome.db
    return {"calibration": db.getCalibration(outcome.calibrationID, full=True), "steps": db.getSteps(outcome.calibrationID),
            "received": db.getResultTimes(outcome.calibrationID)}


def first(value):
    """A constant's fitted value (the first of a list such as CalibrECAL)."""
    return value[0] if isinstance(value, list) else value


def texts(figure):
    """The window extents of every label a reader must read: titles, axis and tick labels, legends."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    found = [(figure._suptitle.get_text(), figure._suptitle.get_window_extent(renderer))]
    found += [("legend", legend.get_window_extent(renderer)) for legend in figure.legends]
    for axis in figure.axes:
        if not axis.get_visible():
            continue
        labels = [axis.title, axis.xaxis.label, axis.yaxis.label, *shown_ticks(axis.xaxis), *shown_ticks(axis.yaxis)]
        found += [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text() and t.get_visible()]
    return found


def shown_ticks(axis):
    """The tick labels drawn: those of ticks inside the view (matplotlib keeps the others, undrawn)."""
    low, high = sorted(axis.get_view_interval())
    return [label for tick, label in zip(axis.get_ticklocs(), axis.get_ticklabels(), strict=True) if low <= tick <= high]


def assert_readable(figure):
    found = texts(figure)
    for (a, boxA), (b, boxB) in itertools.combinations(found, 2):
        assert not boxA.overlaps(boxB), f"{a!r} overlaps {b!r}"
    renderer = figure.canvas.get_renderer()
    for legend in figure.legends:
        for axis in figure.axes:
            if axis.get_visible():
                assert not legend.get_window_extent(renderer).overlaps(axis.get_window_extent(renderer))
    image = matplotlib.image.imread(io.BytesIO(png(figure)), format="png")
    assert image.shape[0] >= 300 and image.shape[1] >= 600


def test_the_phase_plot_draws_each_measurement_over_its_target_with_the_accuracy_band(calibration):
    steps = calibration["steps"]
    figure = phase_plot(7, readings(steps, calibration["calibration"]["Settings"]))
    targets = {"1.0": PARTICLES["gamma"][1], "1.1": PARTICLES["kaon"][1] - K0L_MASS}
    panels = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title().split()[0] for axis in panels] == ["1.0", "1.1"]
    for axis in panels:
        key = axis.get_title().split()[0]
        measured = [(s["Step"], s["Outcome"]["measurements"][key]) for s in steps if key in s["Outcome"]["measurements"]]
        assert len(measured) >= 2  # legacy: a phase takes several steps
        drawn = {}
        for container in axis.containers:
            line = container.lines[0]
            drawn[container.get_label()] = (list(line.get_xdata()), list(line.get_ydata()))
        for observable in ("barrelMean", "endcapMean"):
            xs, ys = drawn[observable]
            assert [round(x) for x in xs] == [step for step, _ in measured]
            assert ys == pytest.approx([m["values"][observable] / targets[key] for _, m in measured], rel=1e-12)
        # the band the phase accepts: the accuracy of the beam energy (HCAL: of the K0L's total energy)
        width = ACCURACY * {"1.0": PARTICLES["gamma"][1], "1.1": PARTICLES["kaon"][1]}[key] / targets[key]
        band = axis.patches[0]  # axhspan: a rectangle in data units along y
        assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((1 - width, 1 + width))
    assert_readable(figure)


def test_the_constants_plot_draws_each_steps_constant_and_the_final_value(calibration):
    steps, calibration_row = calibration["steps"], calibration["calibration"]
    final = calibration_row["State"]["constants"]
    uncertainties = final_uncertainties(steps)
    figure = constants_plot(7, steps, final, uncertainties)
    panels = {axis.get_title().split()[0]: axis for axis in figure.axes if axis.get_visible()}
    assert {"CalibrECAL", "ECALEndcapCorrectionFactor", "CalibrHCALBarrel", "CalibrHCALEndcap"} <= set(panels)
    for name, axis in panels.items():
        running, ending = axis.containers
        assert list(running.lines[0].get_ydata()) == pytest.approx([first(s["Constants"][name]) for s in steps])
        assert list(ending.lines[0].get_ydata()) == pytest.approx([first(final[name])])
        assert list(ending.lines[0].get_xdata()) == [steps[-1]["Step"] + 1]
        if name in uncertainties:  # the final error bar is the reported uncertainty
            segment = ending.lines[2][0].get_segments()[0]
            assert segment[1][1] - segment[0][1] == pytest.approx(2 * uncertainties[name])
    assert_readable(figure)


def test_the_workers_plot_shows_every_result_the_close_and_who_was_missing(calibration):
    steps, received = calibration["steps"], calibration["received"]
    # as if worker 2's result of the last step never came, and worker 1 had been resubmitted
    last = steps[-1]["Step"]
    kept = [r for r in received if not (r[0] == last and r[1] == 2)]
    figure = workers_plot(7, steps, kept, {1: 1}, 3)
    axis = figure.axes[0]
    byLabel = {c.get_label(): c for c in axis.collections}
    plain, again = byLabel["result received"], byLabel["result of a resubmitted worker"]
    opened = {s["Step"]: s["OpenTime"] for s in steps}
    expected = sorted((float(step), (moment - opened[step]).total_seconds()) for step, _, moment in kept)
    assert points(plain, again) == expected
    assert len(again.get_offsets()) == sum(1 for _, worker, _ in kept if worker == 1)
    assert points(byLabel["step closed"]) == sorted(
        (float(s["Step"]), (s["CloseTime"] - s["OpenTime"]).total_seconds()) for s in steps)
    missing = byLabel["workers without a result at close (number)"].get_offsets()
    assert [round(x) for x, _ in missing] == [last]
    assert "1" in [t.get_text() for t in axis.texts]
    assert_readable(figure)


def points(*collections) -> list[tuple[float, float]]:
    return sorted((float(x), float(y)) for collection in collections for x, y in collection.get_offsets())


def test_nothing_to_draw_says_so():
    stamp = datetime.datetime(2026, 1, 1)
    single = [{"Step": 1, "OpenTime": stamp, "CloseTime": stamp, "Constants": {"a": 1.0}, "Outcome": None}]
    for figure, why in ((workers_plot(3, [], [], {}, 4), "no step was run"),
                        (phase_plot(3, []), "no phase with a target was measured (single-pass phases only)"),
                        (constants_plot(3, single, {"a": 1.0}, {}), "no constant changed")):
        assert why in [t.get_text() for t in figure.texts]
        assert png(figure).startswith(b"\x89PNG")
