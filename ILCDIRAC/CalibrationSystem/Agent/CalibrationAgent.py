"""Calibration agent (being built up: see docs/ARCHITECTURE.md)."""
from DIRAC import S_OK
from DIRAC.Core.Base.AgentModule import AgentModule


class CalibrationAgent(AgentModule):
    """Looks after the worker jobs of running calibrations."""

    def initialize(self):
        return S_OK()

    def execute(self):
        return S_OK()
