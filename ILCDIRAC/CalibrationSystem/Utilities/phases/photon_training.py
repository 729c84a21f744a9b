"""Phase 5 (stage 2), photon likelihood training on Z -> uds events.

Sample: Z -> uds events (zudsFiles); their energy label is not used.
Reconstruction: the DDMarlinPandora processor runs the photon-training Pandora settings
  (pandoraSettingsTrainingFile: PhotonReconstruction with ShouldMakePdfHistograms), which leave
  PandoraLikelihoodDataPhotonTraining.xml in the work directory.
Report: each worker's likelihood file as it is (validated on arrival).
Estimator: per energy bin, every worker's normalised PDF weighted by its number of signal
  (background) events, summed and renormalised: the merged likelihood file.
Update: no constant changes; from the next step on the reconstruction uses the merged file
  (the default Pandora settings are pointed at it), which is what stage 3 recalibrates with.
A single pass: the phase completes after one step.
"""
from __future__ import annotations

from collections.abc import Mapping

from ILCDIRAC.CalibrationSystem.Utilities.likelihood import merge_likelihoods, read_likelihood, write_likelihood
from ILCDIRAC.CalibrationSystem.Utilities.phases.base import Constants, Measurement, Phase, PhaseContext, SampleOutput
from ILCDIRAC.CalibrationSystem.Utilities.summary import Summary, SummarySpec

TRAINING_OUTPUT = "PandoraLikelihoodDataPhotonTraining.xml"
#: Name under which the merged likelihood is stored (the step number is prefixed by the service).
MERGED_LIKELIHOOD = "PandoraLikelihoodData.xml"


class PhotonTraining(Phase):
    number = 5
    name = "PhotonTraining"
    samples = ("zuds",)
    dependsOn = (0, 1, 2, 3, 4)
    outputFiles = {"zuds": (TRAINING_OUTPUT,)}
    pandoraSettings = "training"
    iterative = False

    def spec(self, ctx: PhaseContext) -> SummarySpec:
        return SummarySpec(files={"likelihood": read_likelihood})

    def reduce(self, outputs: Mapping[str, SampleOutput], ctx: PhaseContext) -> Summary:
        text = outputs["zuds"][TRAINING_OUTPUT]
        data = read_likelihood(text)
        summary = self.spec(ctx).empty()
        summary.files["likelihood"] = [text]
        summary.nEvents = int(sum(data.nSignalEvents) + sum(data.nBackgroundEvents))
        return summary

    def measure(self, merged: Summary, ctx: PhaseContext) -> Measurement:
        if not merged.files["likelihood"]:
            return Measurement({}, ok=False, reason="no training file to merge")
        combined = merge_likelihoods([read_likelihood(text) for text in merged.files["likelihood"]])
        return Measurement(
            {
                "signalEvents": float(sum(combined.nSignalEvents)),
                "backgroundEvents": float(sum(combined.nBackgroundEvents)),
                "trainingFiles": float(len(merged.files["likelihood"])),
            },
            artifacts={MERGED_LIKELIHOOD: write_likelihood(combined)},
        )

    def update(self, constants: Constants, measurement: Measurement, ctx: PhaseContext) -> Constants:
        return {}
