"""DISET handler of the Calibration service (being built up: see docs/ARCHITECTURE.md)."""
from DIRAC import S_OK
from DIRAC.Core.DISET.RequestHandler import RequestHandler


class CalibrationHandler(RequestHandler):
    """Thin transport layer over the calibration logic."""

    @classmethod
    def initializeHandler(cls, serviceInfoDict):
        return S_OK()
