"""Issue 11: DIRAC's web portal shows a running calibration (``make test-portal``).

WebAppDIRAC's Job Monitor, opened in headless Chromium as alice (authenticated by her certificate
as behind nginx), lists each worker job of her running calibration with the ApplicationStatus the
workers report through ``JobReport``: ``Running: stage: S; phase: P; step: N`` while a worker
reconstructs, ``PandoraCalib_<ID>: step N is finished. Waiting for other jobs`` while it waits.
Once the calibration is finished, each job's "Logging info" in the Job Monitor shows the worker's
last word, ``PandoraCalib_<ID>: Calibration is finished.`` (the grid's ApplicationStatus column
then shows iLCDirac's own final line for the finished application script). The screenshots are
saved in ``portal-screenshots/`` (or ``$CALIBRATION_PORTAL_SCREENSHOTS``).
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from ILCDIRAC.CalibrationSystem.Client.Backends import job_name
from ILCDIRAC.CalibrationSystem.localdirac.configurations import ACCURACY, CONFIGURATIONS
from ILCDIRAC.CalibrationSystem.localdirac.testbed import CODE_ROOT, Testbed
from ILCDIRAC.CalibrationSystem.test.grid import GridScenario, job_states
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import FAST_WORKERS, require_mariadb
from ILCDIRAC.CalibrationSystem.test.portal import BROWSER_SITE, CHROMIUM, Portal, missing

pytestmark = pytest.mark.portal

CLD = next(c for c in CONFIGURATIONS if c.name == "CLD")
WORKERS = 3
SAMPLES = {"gamma": (3, 600), "kaon": (3, 600), "muon": (3, 1200), "zuds": (3, 150)}
TIMEOUT = 600
RUNNING = re.compile(r"^Running: stage: \d+; phase: \d+; step: \d+$")


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("CALIBRATION_PORTAL_SCREENSHOTS", CODE_ROOT / "portal-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    problem = missing()
    if problem:
        pytest.fail(problem, pytrace=False)
    require_mariadb()
    with Testbed(wms=True, service_options=FAST_WORKERS) as testbed:
        testbed.start_service()
        testbed.start_wms()
        testbed.start_agent()
        with Portal(testbed, "alice") as web:
            web.start()
            yield web


@pytest.fixture(scope="module")
def browser():
    sys.path.insert(0, str(BROWSER_SITE))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _rows(page) -> dict[str, list[str]]:
    """Job name -> the texts of its row in the Job Monitor's grid."""
    rows = {}
    for row in page.locator("table.x-grid-item").all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        names = [c for c in cells if c.startswith("PandoraCaloCalibration_calid_")]
        if names:
            rows[names[0]] = cells
    return rows


#: Column widths (by ExtJS dataIndex) so the screenshots show whole job names and statuses; the
#: columns not needed here are hidden. Only the view changes, not what the portal returns.
_LAYOUT = """() => {
  const widths = {JobName: 440, ApplicationStatus: 430, MinorStatus: 150, Status: 90, Site: 180, Source: 150};
  const hidden = ['LastSignOfLife', 'SubmissionTime', 'OwnerGroup', 'JobType', 'LastUpdateTime'];
  for (const grid of Ext.ComponentQuery.query('gridpanel')) {
    for (const column of grid.getColumns()) {
      if (column.dataIndex in widths) column.setWidth(widths[column.dataIndex]);
      if (hidden.includes(column.dataIndex)) column.hide();
    }
  }
}"""


def _layout(page) -> None:
    page.evaluate(_LAYOUT)


def _refresh(page) -> None:
    page.get_by_role("button", name="Submit").click()
    page.wait_for_load_state("networkidle")


def test_the_job_monitor_shows_every_worker_with_the_talks_status(portal, browser, screenshots, tmp_path):
    testbed = portal.testbed
    scenario = GridScenario(testbed, tmp_path, CLD.truth(), SAMPLES,
                            {"numberOfJobs": WORKERS, "fractionOfFinishedJobsNeededToStartNextStep": 1.0,
                             **ACCURACY, **CLD.settings})
    calibrationID = scenario.submit()
    names = {job_name(calibrationID, w) for w in range(WORKERS)}
    page = browser.new_page(viewport={"width": 2000, "height": 900})
    page.goto(portal.job_monitor_url(), timeout=120_000)
    page.get_by_role("button", name="Submit").wait_for(timeout=120_000)

    # while the calibration runs: the talk's picture, every worker's job Running, the ones that
    # reconstruct with "Running: stage: S; phase: P; step: N", the others waiting for them
    waiting = re.compile(rf"^PandoraCalib_{calibrationID}: step \d+ is finished\. Waiting for other jobs$")
    running_shot = screenshots / "job_monitor_running.png"
    running_shot.unlink(missing_ok=True)
    seen: dict[str, set[str]] = {name: set() for name in names}
    deadline = time.monotonic() + TIMEOUT
    while not running_shot.exists():
        _refresh(page)
        rows = _rows(page)
        for name in names & rows.keys():
            seen[name].update(rows[name])
        statuses = {name: [c for c in rows[name] if RUNNING.match(c) or waiting.match(c)] for name in names & rows.keys()}
        talk = names <= rows.keys() and all("Running" in rows[n] and statuses[n] for n in names)
        if talk and any(RUNNING.match(c) for n in names for c in statuses[n]):
            _layout(page)
            page.screenshot(path=str(running_shot), full_page=True)
            break
        assert scenario.status(calibrationID)["status"] == "running" and time.monotonic() < deadline, (
            f"the Job Monitor never showed every worker running with the talk's status: {seen}")
        time.sleep(0.5)

    # once it is finished: each job's logging info shows the worker's last ApplicationStatus
    assert scenario.wait(calibrationID, timeout=TIMEOUT)["status"] == "finished", scenario.logs(calibrationID)
    jobs = {w["WorkerID"]: w["JobID"] for w in scenario.workers(calibrationID)}
    deadline = time.monotonic() + TIMEOUT
    while any(s["Status"] != "Done" for s in job_states(testbed, jobs.values()).values()):
        assert time.monotonic() < deadline, job_states(testbed, jobs.values())
        time.sleep(1)
    _refresh(page)
    first = job_name(calibrationID, 0)
    page.get_by_text(first, exact=True).click(button="right")
    page.get_by_text("Logging info", exact=True).click()
    finished = f"PandoraCalib_{calibrationID}: Calibration is finished."
    page.get_by_text(finished, exact=True).first.wait_for(timeout=60_000)
    page.evaluate("() => Ext.ComponentQuery.query('window').forEach(w => { w.setWidth(1700); w.setHeight(680); w.center(); })")
    _layout(page)
    page.get_by_text(finished, exact=True).first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "job_monitor_finished_logging_info.png"), full_page=True)
    page.close()
