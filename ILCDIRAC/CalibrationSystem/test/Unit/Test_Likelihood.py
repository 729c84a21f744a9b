"""Pandora photon-likelihood data: the real file format, round trips, the stage-2 merge by hand."""

import numpy as np
import pytest

from ILCDIRAC.CalibrationSystem.Utilities.likelihood import (
    LikelihoodData,
    LikelihoodDataError,
    PdfHistogram,
    merge_likelihoods,
    read_likelihood,
    write_likelihood,
)
from marlin_emulator import STEERING_DIR

SHIPPED = STEERING_DIR / "PandoraSettings" / "PandoraLikelihoodData9EBin.xml"

#: A two-energy-bin file written by hand in Pandora's layout (top-level elements, trailing spaces).
HANDWRITTEN = """<NEnergyBins>2</NEnergyBins>
<EnergyBinLowerEdges>0 5 </EnergyBinLowerEdges>
<NSignalEvents>4 0 </NSignalEvents>
<NBackgroundEvents>2 6 </NBackgroundEvents>
<PhotonSigPeakRms_0>
    <NBinsX>3</NBinsX>
    <XLow>0</XLow>
    <XHigh>3</XHigh>
    <BinContents>0.0 0.25 0.75 0.0 0.0 </BinContents>
</PhotonSigPeakRms_0>
<PhotonBkgPeakRms_0>
    <NBinsX>3</NBinsX>
    <XLow>0</XLow>
    <XHigh>3</XHigh>
    <BinContents>0.5 0.5 0.0 0.0 0.0</BinContents>
</PhotonBkgPeakRms_0>
<PhotonSigPeakRms_1>
    <NBinsX>3</NBinsX>
    <XLow>0</XLow>
    <XHigh>3</XHigh>
    <BinContents>0.0 0.0 0.0 0.0 0.0</BinContents>
</PhotonSigPeakRms_1>
<PhotonBkgPeakRms_1>
    <NBinsX>3</NBinsX>
    <XLow>0</XLow>
    <XHigh>3</XHigh>
    <BinContents>0.0 0.5 0.0 0.0 0.5</BinContents>
</PhotonBkgPeakRms_1>
"""


def _data(signal0, background0, background1, nSignal=(4, 0), nBackground=(2, 6)) -> LikelihoodData:
    def h(contents):
        return PdfHistogram(3, 0.0, 3.0, np.asarray(contents, dtype=float))

    return LikelihoodData(
        (0.0, 5.0), nSignal, nBackground,
        {"PeakRms": (h(signal0), h([0, 0, 0, 0, 0]))},
        {"PeakRms": (h(background0), h(background1))},
    )


def test_reads_the_handwritten_pandora_layout():
    data = read_likelihood(HANDWRITTEN)
    assert data.nEnergyBins == 2
    assert data.energyBinLowerEdges == (0.0, 5.0)
    assert data.nSignalEvents == (4, 0) and data.nBackgroundEvents == (2, 6)
    assert data.variables == ("PeakRms",)
    sig = data.histogram("Sig", "PeakRms", 0)
    assert (sig.nBins, sig.low, sig.high) == (3, 0.0, 3.0)
    np.testing.assert_array_equal(sig.contents, [0, 0.25, 0.75, 0, 0])


def test_shipped_default_likelihood_is_a_complete_nine_bin_lccontent_file():
    data = read_likelihood(SHIPPED.read_text())
    assert data.energyBinLowerEdges == (0.0, 0.2, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0)
    assert data.variables == (
        "PeakRms", "RmsRatio", "LongProfileStart", "LongProfileDiscrepancy", "PeakEnergyFraction", "MinDistanceToTrack",
    )
    assert data.histogram("Sig", "PeakRms", 0).nBins == 50
    for kind in ("Sig", "Bkg"):
        for variable in data.variables:
            for energyBin in range(9):
                assert data.histogram(kind, variable, energyBin).contents.sum() == pytest.approx(1.0, abs=1e-9)


def test_write_then_read_is_the_identity():
    data = read_likelihood(SHIPPED.read_text())
    again = read_likelihood(write_likelihood(data))
    assert again.nSignalEvents == data.nSignalEvents and again.variables == data.variables
    for variable in data.variables:
        for energyBin in range(data.nEnergyBins):
            for kind in ("Sig", "Bkg"):
                np.testing.assert_allclose(
                    again.histogram(kind, variable, energyBin).contents,
                    data.histogram(kind, variable, energyBin).contents,
                    rtol=1e-11,
                )


def test_merge_of_two_files_equals_the_hand_computation():
    first = _data(signal0=[0, 0.25, 0.75, 0, 0], background0=[0.5, 0.5, 0, 0, 0], background1=[0, 0.5, 0, 0, 0.5])
    second = _data(
        signal0=[0, 1, 0, 0, 0], background0=[0, 0, 0, 0, 1], background1=[0, 0, 0, 0, 0],
        nSignal=(1, 0), nBackground=(3, 0),
    )
    merged = merge_likelihoods([first, second])
    assert merged.nSignalEvents == (5, 0) and merged.nBackgroundEvents == (5, 6)
    # signal, energy bin 0: (4 * [0, .25, .75, 0, 0] + 1 * [0, 1, 0, 0, 0]) / 5
    np.testing.assert_allclose(merged.histogram("Sig", "PeakRms", 0).contents, [0, 2 / 5, 3 / 5, 0, 0])
    # background, bin 0: (2 * [.5, .5, 0, 0, 0] + 3 * [0, 0, 0, 0, 1]) / 5
    np.testing.assert_allclose(merged.histogram("Bkg", "PeakRms", 0).contents, [1 / 5, 1 / 5, 0, 0, 3 / 5])
    # background, bin 1: the second file has no events there, so it does not count
    np.testing.assert_allclose(merged.histogram("Bkg", "PeakRms", 1).contents, [0, 0.5, 0, 0, 0.5])
    # signal, bin 1: no events anywhere -> an empty histogram, not a division by zero
    np.testing.assert_array_equal(merged.histogram("Sig", "PeakRms", 1).contents, np.zeros(5))


def test_merge_renormalises_unnormalised_input_and_keeps_one_file_unchanged():
    data = _data(signal0=[0, 2, 6, 0, 0], background0=[1, 1, 0, 0, 0], background1=[0, 1, 0, 0, 1])
    merged = merge_likelihoods([data])
    np.testing.assert_allclose(merged.histogram("Sig", "PeakRms", 0).contents, [0, 0.25, 0.75, 0, 0])
    np.testing.assert_allclose(merged.histogram("Bkg", "PeakRms", 1).contents, [0, 0.5, 0, 0, 0.5])


@pytest.mark.parametrize(
    "text, message",
    [
        ("<NEnergyBins>2</NEnergyBins><unclosed>", "not valid Pandora XML"),
        (HANDWRITTEN.replace("<NSignalEvents>4 0 </NSignalEvents>", ""), "lacks NSignalEvents"),
        (HANDWRITTEN.replace("<NEnergyBins>2<", "<NEnergyBins>3<"), "NEnergyBins is 3 but EnergyBinLowerEdges has 2"),
        (HANDWRITTEN.replace("<NSignalEvents>4 0 <", "<NSignalEvents>4 <"), "NSignalEvents has 1 entries for 2 energy bins"),
        (HANDWRITTEN.replace("<NBackgroundEvents>2 6 <", "<NBackgroundEvents>2 6.5 <"), "must hold integers"),
        (HANDWRITTEN.replace("0.0 0.25 0.75 0.0 0.0", "0.25 0.75 0.0 0.0"), "needs 5 contents"),
        (HANDWRITTEN.replace("0.5 0.5 0.0 0.0 0.0", "0.5 -0.5 0.0 0.0 0.0"), "non-negative"),
        (HANDWRITTEN.replace("<XHigh>3</XHigh>", "<XHigh>zero</XHigh>", 1), "XHigh must be a number"),
        (HANDWRITTEN.replace("PhotonBkgPeakRms_1", "PhotonBkgPeakRms_7"), "energy bin 7 of only 2"),
        (HANDWRITTEN + "<Junk/>", "unexpected element <Junk>"),
        (HANDWRITTEN.replace("PhotonSigPeakRms_1", "PhotonSigPeakRms_0"), "appears twice"),
    ],
)
def test_malformed_files_fail_with_a_specific_error(text, message):
    with pytest.raises(LikelihoodDataError, match=message):
        read_likelihood(text)


def test_missing_histogram_is_named():
    text = HANDWRITTEN.split("<PhotonBkgPeakRms_1>")[0]
    with pytest.raises(LikelihoodDataError, match=r"lacks PhotonBkgPeakRms for energy bins \[1\]"):
        read_likelihood(text)


def test_incompatible_files_are_not_merged():
    data = read_likelihood(HANDWRITTEN)
    other = read_likelihood(HANDWRITTEN.replace("<XHigh>3</XHigh>", "<XHigh>4</XHigh>"))
    with pytest.raises(LikelihoodDataError, match=r"file 1: PhotonSigPeakRms_0 has 3 bins on \[0.0, 4.0\]"):
        merge_likelihoods([data, other])
    shifted = read_likelihood(HANDWRITTEN.replace("<EnergyBinLowerEdges>0 5 ", "<EnergyBinLowerEdges>0 6 "))
    with pytest.raises(LikelihoodDataError, match="energy bins"):
        merge_likelihoods([data, shifted])
    with pytest.raises(LikelihoodDataError, match="empty list"):
        merge_likelihoods([])
    with pytest.raises(LikelihoodDataError, match="item 1 to merge is a str"):
        merge_likelihoods([data, "text"])
