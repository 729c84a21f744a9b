"""The field-spec layer: one check per kind, the same message for the same mistake in the
settings, the detector models and the emulator truth, and the documentation cells."""
import dataclasses

import pytest
import yaml

from ILCDIRAC.CalibrationSystem.Utilities import detectors, schema, settings_schema
from ILCDIRAC.CalibrationSystem.Utilities.detectors import DetectorModelError, load_detector_model
from ILCDIRAC.CalibrationSystem.Utilities.schema import Field, bounds_text, convert, did_you_mean, is_int, is_number
from ILCDIRAC.CalibrationSystem.Utilities.settings import SettingsError, settings_from_dict
from marlin_emulator.truth import TruthError, load_truth, truth_from_mapping

FRACTION = Field("f", "float", 0.5, low=0, openLow=True, high=1)


@pytest.mark.parametrize("value, ok", [(1, True), (-3, True), (True, False), (1.0, False), ("1", False), (None, False)])
def test_is_int_refuses_bools(value, ok):
    assert is_int(value) is ok


@pytest.mark.parametrize("value, ok", [(1, True), (0.5, True), (False, False), (float("nan"), False),
                                       (float("inf"), False), ("0.5", False)])
def test_is_number_is_finite_and_not_bool(value, ok):
    assert is_number(value) is ok


@pytest.mark.parametrize("field, value, expected", [
    (Field("n", "int", low=1), 3.0, 3),
    (Field("b", "bool"), "False", False),
    (Field("s", "str"), "  Marlin ", "Marlin"),
    (Field("o", "optstr"), None, None),
    (Field("p", "numbers", length=2), [1, 2.5], (1.0, 2.5)),
    (Field("r", "range"), [0, 0.5], (0.0, 0.5)),
    (FRACTION, 1, 1.0),
])
def test_convert_accepts(field, value, expected):
    converted, message = convert(field, value)
    assert message is None and converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize("field, value, message", [
    (Field("n", "int", low=1), True, "must be an integer, got True"),
    (Field("n", "int", low=1), 0, "must be >= 1, got 0"),
    (Field("n", "int"), 2**31, "must be at most 2147483647 in size"),
    (Field("layer", "int", low=0, high=1), 2, "must be 0 or 1, got 2"),
    (FRACTION, 0, "must be in (0, 1], got 0"),
    (FRACTION, float("inf"), "must be a finite number"),
    (Field("b", "bool"), 1, "must be True or False"),
    (Field("s", "str"), 12, "quote it in YAML"),
    (Field("w", "str", word=True), "CERN EOS", "must be one word"),
    (Field("c", "choice", choices=("fast", "legacy")), "Fast", "(did you mean 'fast'?)"),
    (Field("p", "numbers", length=2), [1], "must be a list of 2 numbers"),
    (Field("r", "range"), [0.5, 0.2], "must be increasing and inside [0, 1]"),
])
def test_convert_names_the_problem(field, value, message):
    converted, problem = convert(field, value)
    assert converted is None and message in problem


def test_kinds_owned_elsewhere_are_not_guessed():
    with pytest.raises(ValueError, match="converted by its owner"):
        convert(Field("gammaFiles", "files"), ["a"])


def test_did_you_mean():
    assert did_you_mean("NUMBEROFJOBS", ["numberOfJobs"]) == " (did you mean 'numberOfJobs'?)"
    assert did_you_mean("numberOfJob", ["numberOfJobs", "cpuTime"]) == " (did you mean 'numberOfJobs'?)"
    assert did_you_mean("grid", ["dirac", "local"]) == ""


def test_bounds_and_table_cells():
    assert bounds_text(Field("x", "float", low=0, openLow=True, high=0.5, openHigh=True)) == "in (0, 0.5)"
    assert schema.type_text(Field("e", "float", low=0, openLow=True, unit="GeV")) == "float > 0 (GeV)"
    assert schema.type_text(Field("l", "int", low=0, high=1)) == "int, 0 or 1"
    assert schema.default_text(Field("t", "phases", ("1.0", "1.1"))) == '`["1.0","1.1"]`'
    assert schema.markdown_table([Field("k", "bool", True, doc="Why.")]).splitlines()[-1] == "| `k` | bool | True | Why. |"


def test_settings_model_keys_are_what_the_detector_models_supply():
    assert set(detectors.SETTINGS_KEYS) == {f.name for f in settings_schema.FIELDS if f.default is schema.MODEL}
    assert set(load_detector_model("CLD").settings_defaults()) == set(detectors.SETTINGS_KEYS)


def test_a_model_value_and_a_settings_value_fail_alike(tmp_path, monkeypatch):
    """The same wrong nHcalLayers gives the same message in a settings file and in a model file."""
    with pytest.raises(SettingsError) as settingsInfo:
        settings_from_dict({"detectorModel": "CLD", "steeringFile": "s.xml", "backend": "local", "nHcalLayers": 0})
    problem = next(p for p in settingsInfo.value.problems if p.startswith("nHcalLayers"))
    assert problem == "nHcalLayers: must be >= 1, got 0"
    monkeypatch.setattr(detectors, "DATA_DIR", tmp_path)
    detectors._models.cache_clear()
    detectors._name_index.cache_clear()
    try:
        (tmp_path / "Base.yaml").write_text(yaml.safe_dump({"name": "Base", "nHcalLayers": 0}))
        with pytest.raises(DetectorModelError) as modelInfo:
            load_detector_model("Base")
    finally:
        detectors._models.cache_clear()
        detectors._name_index.cache_clear()
    assert problem in str(modelInfo.value)


def test_a_truth_value_fails_like_a_settings_value():
    data = load_truth("CLD").to_mapping()
    data["hcal"] = {**data["hcal"], "nLayers": True}
    with pytest.raises(TruthError, match=r"hcal\.nLayers: must be an integer, got True"):
        truth_from_mapping(data)


@dataclasses.dataclass(frozen=True)
class _Section:
    probability: float = schema.bounded(low=0, high=1)
    layers: int = schema.bounded(low=6)
    pair: tuple[float, float] = schema.bounded(low=0, openLow=True)
    flag: bool = dataclasses.field()


def test_a_dataclass_states_its_fields():
    probability, layers, pair, flag = schema.dataclass_fields(_Section)
    assert (probability.kind, probability.low, probability.high) == ("float", 0, 1)
    assert (layers.kind, layers.low) == ("int", 6) and flag.kind == "bool"
    assert (pair.kind, pair.length) == ("numbers", 2)
    assert convert(layers, 2) == (None, "must be >= 6, got 2")
    assert convert(pair, [1, 0]) == (None, "must be a list of 2 numbers > 0, got [1, 0]")
    assert convert(pair, [1, 2]) == ((1.0, 2.0), None)


def test_detector_model_attributes_have_their_settings_types():
    types = {"int": "int", "float": "float", "str": "str", "range": "tuple[float, float]"}
    attributes = {a.name: a.type for a in dataclasses.fields(detectors.DetectorModel)}
    for name in detectors.SETTINGS_KEYS:
        expected = types[settings_schema.BY_NAME[name].kind]
        assert attributes[name] in (expected, f"{expected} | None"), name
