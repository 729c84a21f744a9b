"""Every RPC method of the real service, called with what nobody should send: wrong types,
NaN and infinities, huge and negative numbers, huge strings, lists and dicts, deep nesting,
stale and unknown IDs, too many and too few arguments. Every answer must be a one-line refusal
(never an internal error), the service must stay up, and the database must not change.

Each call replaces one argument of a valid call by a value that is invalid in that place (so
no call is a legitimate request that may rightly change something); users' methods are called
as the calibration's owner, the agent's as the host.
"""
from __future__ import annotations

import math

import pytest

from ILCDIRAC.CalibrationSystem.localdirac.scenario import Scenario, create_via_rpc, database_rows, shifted_truth
from ILCDIRAC.CalibrationSystem.localdirac.testbed import Testbed
from ILCDIRAC.CalibrationSystem.test.Integration.conftest import FAST_WORKERS, require_mariadb
from ILCDIRAC.CalibrationSystem.Utilities.phases import PhaseContext, phase_for

TRUTH = shifted_truth("FCCee_o1_v04", {"CalibrECAL": 1.15})
SAMPLES = {"gamma": (2, 100)}
SETTINGS = {"numberOfJobs": 2, "phaseSequence": ["1.0"], "strategy": "legacy", "backend": "dirac",
            "marlinVersion": "ILCSoft-2020-02-07_gcc62"}
NAN, INF = math.nan, math.inf
HUGE_STRING = "x" * 2_000_000


def nested(depth: int, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


#: Values of a wrong type for each declared argument type (DIRAC's own type check, or ours).
NOT_INT = [None, 1.5, NAN, INF, -INF, "1", [1], {"a": 1}, (1,)]
NOT_LIST = [None, 1, NAN, "1", {"a": 1}, (1,)]
NOT_DICT = [None, 1, NAN, "x", [("a", 1)], (1,)]
NOT_STR = [None, 1, NAN, INF, ["x"], {"x": 1}]
#: Integers no calibration ever has as its ID (the last one is free), and no worker of a
#: two-worker calibration has as its ID.
BAD_IDS = [True, False, -1, 0, 2**31, 2**63, -(2**63) - 1, 10**100, 2**31 - 1]
BAD_WORKERS = [True, False, -1, 2, 2**31, 2**63, -(2**63) - 1, 10**100]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """A service (no agent: nothing changes the database unless a call does) with one running and
    one killed calibration of alice's, and the valid arguments the fuzzing starts from."""
    require_mariadb()
    with Testbed(local_backend=False, service_options=FAST_WORKERS) as testbed:
        testbed.start_service()
        folder = tmp_path_factory.mktemp("fuzz")
        idle = create_via_rpc(testbed, folder / "idle", truth=TRUTH, samples=SAMPLES, settings=SETTINGS)
        killed = create_via_rpc(testbed, folder / "killed", truth=TRUTH, samples=SAMPLES, settings=SETTINGS)
        assert testbed.rpc("alice").killCalibration(killed)["OK"]
        from ILCDIRAC.CalibrationSystem.Client.Submission import collect_input_files
        from ILCDIRAC.CalibrationSystem.Utilities.settings import load_settings

        resolved = load_settings(Scenario(testbed, folder / "new", TRUTH, SAMPLES, SETTINGS).prepare()).to_dict()
        files = collect_input_files(resolved, folder / "new")
        setup = testbed.rpc("alice").getWorkerSetup(idle, 0)["Value"]
        summary = phase_for("1.0").spec(PhaseContext.from_settings(setup["settings"])).empty().to_payload()
        testbed.valid = {"idle": idle, "killed": killed, "settings": resolved, "files": files, "summary": summary}
        yield testbed


def calls(bed: Testbed) -> list[tuple[str, str, tuple]]:
    """(user, method, arguments) of every fuzzed call."""
    v = bed.valid
    idle, killed, summary = v["idle"], v["killed"], v["summary"]
    report = {"phases": {"1.0": summary}}
    ids = BAD_IDS + NOT_INT
    workers = BAD_WORKERS + NOT_INT
    stale = [killed]
    settings_bad = [
        {}, {1: 2}, {**v["settings"], "numberOfJobs": NAN}, {**v["settings"], "numberOfJobs": -1},
        {**v["settings"], "numberOfJobs": 10**100}, {**v["settings"], "fractionOfFinishedJobsNeededToStartNextStep": INF},
        {**v["settings"], "gammaEnergy": NAN}, {**v["settings"], "gammaFiles": HUGE_STRING},
        {**v["settings"], "gammaFiles": ["/a.slcio"] * 50_000}, {**v["settings"], "startingConstants": nested(200)},
        {**v["settings"], "backend": "local"}, {**v["settings"], "outputPath": "/etc", "outputSE": "SE"},
        {**v["settings"], "phaseSequence": ["1.0"] * 5000}, {**v["settings"], "detectorModel": HUGE_STRING[:5000]},
        {**v["settings"], "unknownKey": 1}, {**v["settings"], "marlinVersion": None},
        {f"key{i}": i for i in range(20_000)},
    ]
    files_bad = [{}, {"steering.xml": 5}, {"steering.xml": None}, {"steering.xml": "<marlin><unclosed>"},
                 {**v["files"], "../escape.xml": "x"}, {**v["files"], "/etc/passwd": "x"},
                 {**v["files"], "result_constants.json": "{}"}, {**v["files"], "x" * 300: "x"},
                 {**v["files"], "n": nested(200)}, {str(i): "x" for i in range(5000)}]
    report_bad = [
        {}, {"phases": NAN}, {"phases": {}}, {"phases": {"1.0": NAN}}, {"phases": {"1.0": {**summary, "nEvents": NAN}}},
        {"phases": {"1.0": {**summary, "nEvents": -1}}}, {"phases": {"1.0": {**summary, "nEvents": 10**100}}},
        {"phases": {"1.0": {**summary, "version": INF}}}, {"phases": {"1.0": {**summary, "hists": nested(200)}}},
        {"phases": {"1.0": {**summary, "arrays": {"x": [NAN] * 10}}}}, {"phases": {"1.0": summary}, "extra": 1},
        {"phases": {"1.0": {**summary, "files": {"x": [HUGE_STRING] * 5}}}}, {"phases": {"9.9": summary}},
        *({"phases": {"1.0": {**summary, "hists": {name: {**h, **bins} for name, h in summary["hists"].items()}}}}
          for bins in ({"index": [0], "values": [NAN]}, {"index": [0], "values": [-1]},
                       {"index": [0], "values": [1e308]}, {"index": [10**100], "values": [1]},
                       {"index": [NAN], "values": [1]}, {"index": [5, 3], "values": [1, 1]},
                       {"index": list(range(20_000)), "values": [1] * 20_000}, {"index": [0], "values": []},
                       {"axes": [[10**100, 0.0, 1.0, True]]}, {"axes": nested(200)})),
    ]
    jobs_bad = [{}, {"0": "1"}, {"0": None, "1": "2"}, {"0": NAN, "1": "2"}, {"x": "1", "y": "2"},
                {"0": "1", "1": "1"}, {"0": "1", "1": HUGE_STRING}, {"0": "local:1", "1": "local:2"},
                {"0": "-1", "1": "2"}, {"0": "1", "1": "1e3"}, {str(i): str(i + 1) for i in range(20_000)},
                {"0": "1", "1": "2", "2": "3"}]
    updates_bad = [{}, {"0": {}}, {"0": None}, {"x": {"Status": "dead"}}, {"0": {"Status": "bogus"}},
                   {"0": {"JobID": "local:1"}}, {"0": {"JobID": "9" * 100}}, {"0": {"Resubmissions": -1}},
                   {"0": {"Resubmissions": NAN}}, {"0": {"LastSeen": "now"}}, {"0": {"ApplicationStatus": 5}},
                   {"9999": {"Status": "dead"}}, {"-1": {"Status": "dead"}}, {"0": {"Owner": "bob"}},
                   {str(i): {"Status": "dead"} for i in range(5000)}]
    names_bad = ["", HUGE_STRING, "../../etc/passwd", "/etc/passwd", "\x00", "result_constants.json", "steering.xml\n"]
    status_bad = [[idle, "x"], [NAN], [True], [10**100], [idle] * 20_001, list(range(1, 30)), [[idle]],
                  [idle, None], [-1], [2**31 - 1]]
    text_bad = ["", "   ", HUGE_STRING]
    # method: (user, valid arguments, {position: invalid values})
    plan = {
        "createCalibration": ("alice", (v["settings"], v["files"]),
                              {0: NOT_DICT + settings_bad, 1: NOT_DICT + files_bad}),
        "getCalibrationStatus": ("alice", ([idle],), {0: NOT_LIST + status_bad}),
        "getCalibrationHistory": ("alice", (idle,), {0: ids}),
        "killCalibration": ("alice", (idle,), {0: ids + stale}),
        "registerWorkers": ("alice", (idle, {"0": "1", "1": "2"}), {0: ids + stale, 1: NOT_DICT + jobs_bad}),
        "getWorkerSetup": ("alice", (idle, 0), {0: ids + stale, 1: workers}),
        "getStepParameters": ("alice", (idle, 0, 0), {0: ids, 1: workers, 2: NOT_INT + [True, -1, 2, 2**63, 10**100]}),
        "waitForNextStep": ("alice", (idle, 0, 0), {0: ids, 1: workers, 2: NOT_INT + [True, -1, 2, 2**63, 10**100]}),
        "submitResult": ("alice", (idle, 1, 0, report),
                         {0: ids, 1: NOT_INT + [True, -1, 0, 2, 2**63, 10**100], 2: workers, 3: NOT_DICT + report_bad}),
        "getCalibrationFile": ("alice", (idle, "steering.xml"), {0: ids, 1: NOT_STR + names_bad}),
        "getCalibrationResults": ("alice", (idle,), {0: ids + stale}),
        "closeReadySteps": ("host", (), {}),
        "getAgentWork": ("host", (), {}),
        "setWorkerStates": ("host", (idle, {"0": {"Status": "dead"}}), {0: ids, 1: NOT_DICT + updates_bad}),
        "failCalibration": ("host", (idle, "reason"), {0: ids, 1: NOT_STR + text_bad}),
        "finalizeCalibration": ("host", (idle,), {0: ids}),
        "markDelivered": ("host", (idle, "report"), {0: ids, 1: NOT_STR + text_bad + ["report on a running one"]}),
        "removeCalibrationData": ("host", (idle,), {0: ids}),
    }
    fuzzed = []
    for method, (user, valid, positions) in plan.items():
        fuzzed.append((user, method, valid + ("one too many",)))
        if valid:
            fuzzed.append((user, method, valid[:-1]))
        for position, values in positions.items():
            for value in values:
                fuzzed.append((user, method, valid[:position] + (value,) + valid[position + 1:]))
    return fuzzed


def test_every_rpc_method_refuses_bad_arguments_in_one_line_and_changes_nothing(bed):
    fuzzed = calls(bed)
    assert len(fuzzed) > 400
    before = database_rows(bed)
    clients = {user: bed.rpc(user) for user in ("alice", "host")}
    problems = []
    for user, method, args in fuzzed:
        result = getattr(clients[user], method)(*args)
        message = result.get("Message", "")
        shown = f"{method}{tuple(repr(a)[:40] for a in args)}: {message[:300]!r}"
        if result["OK"]:
            problems.append(f"accepted: {shown}")
        elif "\n" in message or len(message) > 600 or "internal error" in message or "Traceback" in message:
            problems.append(f"not a one-line refusal: {shown}")
    assert problems == [], "\n".join(problems)
    assert database_rows(bed) == before
    assert bed.ping()["OK"]
    assert "internal error" not in bed.service_log.read_text()
