"""ConfigTemplate.cfg carries every option the service and agent read, with the code's default,
and every method of the handler is typed and covered by an authorization rule, in the CS and in
the handler's own ``auth_`` default (which DIRAC applies where the CS has no line for a method)."""
import ast
import dataclasses
import re
from pathlib import Path

from diraccfg import CFG

from ILCDIRAC.CalibrationSystem.logic.service import AGENT_RPCS, RPC_TYPES
from ILCDIRAC.CalibrationSystem.Service.CalibrationHandler import CalibrationHandler
from ILCDIRAC.CalibrationSystem.Utilities.limits import ServiceLimits

PACKAGE = Path(__file__).resolve().parents[2]
TEMPLATE = CFG().loadFromFile(str(PACKAGE / "ConfigTemplate.cfg"))
HANDLER = (PACKAGE / "Service" / "CalibrationHandler.py").read_text()
AGENT = (PACKAGE / "Agent" / "CalibrationAgent.py").read_text()


def options_read(source: str, accessor: str) -> dict[str, str]:
    """Option name -> default, for every ``accessor("Name", default)`` call in the source."""
    found = {}
    for call in ast.walk(ast.parse(source)):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == accessor:
            name = ast.literal_eval(call.args[0])
            default = ast.literal_eval(call.args[1])
            found[name] = default
    return found


def normalise(value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values]


def listed(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def test_every_agent_option_is_in_the_template_with_its_default():
    options = options_read(AGENT, "am_getOption")
    assert options  # the agent does read options
    section = TEMPLATE["Agents"]["CalibrationAgent"]
    for name, default in options.items():
        assert name in section, f"agent option {name} missing from ConfigTemplate.cfg"
        assert [v for v in normalise(default) if v] == listed(section[name]), name


def test_every_service_option_is_in_the_template_with_its_default():
    options = options_read(HANDLER, "srv_getCSOption")
    section = TEMPLATE["Services"]["Calibration"]
    for name, default in options.items():
        assert name in section, f"service option {name} missing from ConfigTemplate.cfg"
        evaluated = [str(int(float(v))) if re.fullmatch(r"[0-9.]+", v) else v for v in listed(section[name])]
        assert normalise(default) == evaluated, name


def test_every_service_limit_is_in_the_template_with_its_default():
    section = TEMPLATE["Services"]["Calibration"]
    for spec in dataclasses.fields(ServiceLimits):
        option = spec.metadata["option"]
        assert option in section, f"service limit {option} missing from ConfigTemplate.cfg"
        assert int(section[option]) == spec.default, option
    # and the service reads exactly those options: the template's values give the default limits
    assert ServiceLimits.from_options(lambda name, default: section[name]) == ServiceLimits()


def test_every_exported_method_is_typed_and_agent_methods_need_trusted_host():
    tree = ast.parse(HANDLER)
    handler = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CalibrationHandler")
    exported = [f.name.removeprefix("export_") for f in handler.body if isinstance(f, ast.FunctionDef) and f.name.startswith("export_")]
    typed = {t.targets[0].id.removeprefix("types_") for t in handler.body if isinstance(t, ast.Assign)
             and t.targets[0].id.startswith("types_")}
    assert set(exported) == typed
    rules = TEMPLATE["Services"]["Calibration"]["Authorization"]
    assert rules["Default"] == "authenticated"
    trusted = {name for name in rules.listOptions() if rules[name] == "TrustedHost"}
    assert trusted <= set(exported)
    for method in ("getAgentWork", "closeReadySteps", "setWorkerStates", "failCalibration", "finalizeCalibration",
                   "markDelivered", "removeCalibrationData", "claimNotification", "releaseNotification"):
        assert method in trusted, method


def test_every_rpc_of_the_facade_is_exported_typed_and_has_an_auth_default_as_strict_as_the_template():
    exported = {name.removeprefix("export_") for name in dir(CalibrationHandler) if name.startswith("export_")}
    assert exported - {"ping", "whoami", "echo", "refreshConfiguration"} == set(RPC_TYPES)
    rules = TEMPLATE["Services"]["Calibration"]["Authorization"]
    for name, types in RPC_TYPES.items():
        assert getattr(CalibrationHandler, f"types_{name}") == list(types), name
        expected = ["TrustedHost"] if name in AGENT_RPCS else ["authenticated"]
        assert getattr(CalibrationHandler, f"auth_{name}") == expected, name
        assert listed(rules[name] if name in rules.listOptions() else rules["Default"]) == expected, name
