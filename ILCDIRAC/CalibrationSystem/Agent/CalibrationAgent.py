"""CalibrationAgent: keeps running calibrations moving without anyone watching them.

Each cycle it closes steps the service could not close itself (a service killed between
committing the last needed result and closing the step): the safety net of the state machine.
"""
from DIRAC import S_OK
from DIRAC.Core.Base.AgentModule import AgentModule

from ILCDIRAC.CalibrationSystem.Client.CalibrationClient import CalibrationClient


class CalibrationAgent(AgentModule):
    """Looks after the steps and worker jobs of running calibrations."""

    def initialize(self):
        self.client = CalibrationClient(useCertificates=True)
        return S_OK()

    def execute(self):
        result = self.client.closeReadySteps()
        if not result["OK"]:
            self.log.error("closeReadySteps failed", result["Message"])
            return result
        for closed in result["Value"]:
            self.log.notice("closed a step the service left open", str(closed))
        return S_OK()
