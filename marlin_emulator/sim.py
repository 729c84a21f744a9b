"""The simulated events ("sim bank"): everything that does not depend on calibration constants.

``simulate(sample, events)`` returns, for the requested event numbers of one sample file, the
simulated (visible) energies per ECAL layer and HCAL region, the geometry and truth flags, and the
uniform draws the reconstruction compares with probabilities. Energies are already above the
digitiser's raw sim-energy thresholds, so digitisation is exactly proportional to its constants.
Physics: docs/PHYSICS.md section 8; parameters: the sample's DetectorTruth.

Visible energies are normalised so that the *true* constants give back the deposited energy:
ECAL ``sum_l c*_l S_l (w_B + (1 - w_B) k*_EC) = E_deposited``, HCAL ``sum_r c*_r S_r = E_deposited``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import special

from marlin_emulator import geometry
from marlin_emulator.rng import EventRandom, hit_indices
from marlin_emulator.samples import K0L_MASS, SampleFile
from marlin_emulator.truth import DetectorTruth

#: PfoAnalysis' value of pfoMinHCalLayerToEdge when no PFO has an HCAL hit (std::numeric_limits<int>::max()).
NO_HCAL_HITS = np.iinfo(np.int32).max
#: Mean of the Moyal (Landau-like) variate -2 ln|Z| relative to its mode: Euler's gamma + ln 2.
MOYAL_MEAN = np.euler_gamma + np.log(2.0)
#: Subdetector codes of muon hits.
ECAL, HCAL_BARREL, HCAL_ENDCAP, HCAL_RING, YOKE = range(5)
#: Particle kinds of jet events.
CHARGED, PHOTON, NEUTRAL_HADRON = range(3)


@dataclass(frozen=True)
class ShowerBank:
    """Single photons or K0L: one shower per event."""

    sample: SampleFile
    random: EventRandom
    events: np.ndarray  # event numbers in the file
    cosTheta: np.ndarray
    phi: np.ndarray
    converted: np.ndarray  # photon converted in the tracker: two charged targets
    conversionShare: np.ndarray
    ecalPrompt: np.ndarray  # (n, nLayers) visible sim energy per ECAL layer, within 10 ns
    ecalBarrelWeight: np.ndarray
    hcalPrompt: np.ndarray  # (n, 3) barrel, endcap, ring
    lcalEnergy: np.ndarray  # digitised LumiCal energy (GeV)
    yokeSim: np.ndarray
    emFraction: np.ndarray  # hadronic showers: electromagnetic fraction (1 for photons)
    hcalLastLayersFraction: np.ndarray  # share of the HCAL energy in the 5 layers nearest the edge
    layersToEdge: np.ndarray  # int32, NO_HCAL_HITS without HCAL deposit
    uFragment: np.ndarray
    fragmentFraction: np.ndarray
    uFragmentType: np.ndarray
    uMisId: np.ndarray
    ecalHits: np.ndarray  # (n, 2) sim hits in ECAL barrel, endcap (direction-correction histograms)
    hcalHits: np.ndarray  # (n, 3)

    @property
    def truth(self) -> DetectorTruth:
        return self.sample.truth

    @property
    def isPhoton(self) -> bool:
        return self.sample.particle == "gamma"


@dataclass(frozen=True)
class MuonBank:
    """Single muons with one sim hit per crossed layer (flat hit arrays, ``hitOwner`` = row)."""

    sample: SampleFile
    random: EventRandom
    events: np.ndarray
    cosTheta: np.ndarray
    phi: np.ndarray
    momentumSmear: np.ndarray  # relative track momentum error
    hitOwner: np.ndarray
    hitSubdetector: np.ndarray
    hitLayer: np.ndarray  # ECAL: cell-ID layer number; HCAL: 0-based layer index
    hitEndcap: np.ndarray  # ECAL hit in the endcap
    hitSimEnergy: np.ndarray
    hitDirectionFactor: np.ndarray  # PfoAnalysis' direction correction: sin(theta) barrel, |cos| endcap

    @property
    def truth(self) -> DetectorTruth:
        return self.sample.truth


@dataclass(frozen=True)
class JetBank:
    """Z -> uds events: particles (flat, ``owner`` = row) and photon-ID training candidates."""

    sample: SampleFile
    random: EventRandom
    events: np.ndarray
    qPdg: np.ndarray
    quarkCosTheta: np.ndarray
    owner: np.ndarray
    kind: np.ndarray
    pdg: np.ndarray
    energy: np.ndarray
    cosTheta: np.ndarray
    phi: np.ndarray
    candidateOwner: np.ndarray
    candidateSignal: np.ndarray
    candidateEnergy: np.ndarray
    candidateIndex: np.ndarray

    @property
    def truth(self) -> DetectorTruth:
        return self.sample.truth


def simulate(sample: SampleFile, events: np.ndarray) -> ShowerBank | MuonBank | JetBank:
    """The sim bank of the given event numbers (0 <= event < sample.nEvents) of one file."""
    events = np.asarray(events, dtype=np.int64)
    if events.size and (events.min() < 0 or events.max() >= sample.nEvents):
        raise ValueError(f"events outside 0..{sample.nEvents - 1} of {sample.path}")
    random = EventRandom(sample.key)
    if sample.particle == "gamma":
        return _photons(sample, random, events)
    if sample.particle == "kaon0L":
        return _kaons(sample, random, events)
    if sample.particle == "mu-":
        return _muons(sample, random, events)
    return _jets(sample, random, events)


# ------------------------------------------------------------------------------------ showers
def _direction(random: EventRandom, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 2.0 * random.uniform(events, "cosTheta") - 1.0, 2.0 * np.pi * random.uniform(events, "phi")


def _pandora_draws(sample: SampleFile, random: EventRandom, events: np.ndarray) -> dict[str, np.ndarray]:
    low, high = (sample.truth.photon if sample.particle == "gamma" else sample.truth.hadron).fragmentEnergyFraction
    return {
        "uFragment": random.uniform(events, "fragment"),
        "fragmentFraction": low + (high - low) * random.uniform(events, "fragmentFraction"),
        "uFragmentType": random.uniform(events, "fragmentType"),
        "uMisId": random.uniform(events, "misId"),
    }


def _photons(sample: SampleFile, random: EventRandom, events: np.ndarray) -> ShowerBank:
    truth, energy = sample.truth, sample.energy
    p = truth.photon
    cos, phi = _direction(random, events)
    absCos = np.abs(cos)
    sin = np.sqrt(1.0 - absCos**2)
    wBarrel = geometry.ecal_barrel_weight(absCos, truth)
    lcal = geometry.lumical_fraction(absCos, truth)
    converted = random.uniform(events, "conversion") < 1.0 - np.exp(
        -(7.0 / 9.0) * p.trackerX0 / np.maximum(sin, geometry.MIN_PROJECTION)
    )
    # longitudinal profile: the photon converts at an exponential depth (mean 9/7 X0), then the
    # pair showers like an electron: Gamma profile with t_max = ln(E / E_c) - 0.5 X0
    shape = p.profileB * (np.log(energy / p.criticalEnergy) - 0.5) + 1.0
    shape = np.maximum(shape * (1.0 + p.profileShapeSpread * random.normal(events, "profileShape")), 1.2)
    start = p.startDepthMean * random.exponential(events, "startDepth")
    depth = geometry.ecal_layer_boundaries(truth)[None, :] * geometry.path_factor(absCos, truth)[:, None]
    cdf = special.gammainc(shape[:, None], p.profileB * np.clip(depth - start[:, None], 0.0, None))
    layerShare = np.diff(cdf, axis=1)
    leak = 1.0 - cdf[:, -1]
    response = (1.0 - geometry.transition_dip(absCos, truth)) * (
        1.0
        + truth.ecal.stochasticTerm / np.sqrt(energy) * random.normal(events, "stochastic")
        + truth.ecal.constantTerm * random.normal(events, "constant")
    )
    crackLow, crackHigh = p.crackLoss
    cracked = random.uniform(events, "crack") < p.crackProbability
    response *= np.where(cracked, 1.0 - (crackLow + (crackHigh - crackLow) * random.uniform(events, "crackLoss")), 1.0)
    deposit = energy * (1.0 - lcal) * response
    regionScale = wBarrel + (1.0 - wBarrel) * truth.trueConstants.ECALEndcapCorrectionFactor
    ecal = deposit[:, None] * layerShare / (np.asarray(truth.ecalLayerTrueConstants)[None, :] * regionScale[:, None])
    leaked = deposit * leak * truth.hcal.emResponse
    hcalShares = geometry.hcal_region_weights(absCos, truth)
    hcal = leaked[:, None] * hcalShares / _hcal_true_constants(truth)[None, :]
    ecalHitsTotal = np.rint(truth.ecal.hitsPerGeV * deposit * (1.0 - leak)).astype(np.int64)
    barrelHits = np.rint(ecalHitsTotal * wBarrel).astype(np.int64)
    n = events.size
    return ShowerBank(
        sample=sample,
        random=random,
        events=events,
        cosTheta=cos,
        phi=phi,
        converted=converted,
        conversionShare=0.05 + 0.9 * random.uniform(events, "conversionShare"),
        ecalPrompt=ecal,
        ecalBarrelWeight=wBarrel,
        hcalPrompt=hcal,
        lcalEnergy=energy * lcal,
        yokeSim=np.zeros(n),
        emFraction=np.ones(n),
        hcalLastLayersFraction=np.zeros(n),
        layersToEdge=np.where(leaked > 0.02, truth.hcal.nLayers - 3, NO_HCAL_HITS).astype(np.int32),
        ecalHits=np.stack([barrelHits, ecalHitsTotal - barrelHits], axis=1),
        hcalHits=np.zeros((n, 3), dtype=np.int64),
        **_pandora_draws(sample, random, events),
    )


def _hcal_true_constants(truth: DetectorTruth) -> np.ndarray:
    c = truth.trueConstants
    return np.array([c.CalibrHCALBarrel, c.CalibrHCALEndcap, c.CalibrHCALOther])


def _kaons(sample: SampleFile, random: EventRandom, events: np.ndarray) -> ShowerBank:
    truth = sample.truth
    h, hcalTruth = truth.hadron, truth.hcal
    kinetic = sample.energy - K0L_MASS
    cos, phi = _direction(random, events)
    absCos = np.abs(cos)
    wBarrel = geometry.ecal_barrel_weight(absCos, truth)
    lcal = geometry.lumical_fraction(absCos, truth)
    pathFactor = geometry.path_factor(absCos, truth)
    layerLength = hcalTruth.layerInteractionLengths * pathFactor
    ecalDepth = truth.ecal.interactionLengths * pathFactor
    totalDepth = ecalDepth + hcalTruth.nLayers * layerLength
    # interaction point and longitudinal Gamma profile (lambda, along the path)
    start = random.exponential(events, "interaction")
    shape = np.maximum(h.profileShape * (1.0 + h.profileShapeSpread * random.normal(events, "profileShape")), 1.2)

    def cdf(depth: np.ndarray) -> np.ndarray:
        """Share of the shower deposited before ``depth`` ((n,) or (n, k) lambda)."""
        column = (-1,) + (1,) * (np.ndim(depth) - 1)
        return special.gammainc(
            shape.reshape(column), np.clip(depth - start.reshape(column), 0.0, None) / h.profileScale
        )

    x0 = np.asarray(truth.ecalLayerX0)
    ecalBoundaries = np.concatenate([[0.0], np.cumsum(x0)]) / x0.sum()
    layerDepths = ecalBoundaries[None, :] * ecalDepth[:, None]
    ecalCdf = cdf(layerDepths)
    ecalShare = np.diff(ecalCdf, axis=1)
    hcalEnd = cdf(totalDepth)
    hcalShare = hcalEnd - ecalCdf[:, -1]
    leak = 1.0 - hcalEnd
    # electromagnetic fraction and response (normalised to 1 for the mean f_em)
    meanEm = truth.em_fraction_mean(kinetic)
    emFraction = random.beta(meanEm, h.emFractionSpread, events, "emFraction")
    normH = meanEm + (1.0 - meanEm) / hcalTruth.eOverH
    normE = meanEm + (1.0 - meanEm) / h.ecalEOverH
    responseH = (emFraction + (1.0 - emFraction) / hcalTruth.eOverH) / normH
    responseE = (emFraction + (1.0 - emFraction) / h.ecalEOverH) / normE * truth.ecalHadronResponse
    target = np.hypot(h.stochasticTerm / np.sqrt(kinetic), h.constantTerm)
    fromEm = (1.0 - 1.0 / hcalTruth.eOverH) * h.emFractionSpread / normH
    sampling = 1.0 + np.sqrt(max(target**2 - fromEm**2, 1e-6)) * random.normal(events, "sampling")
    deposit = kinetic * (1.0 - lcal) * sampling
    regionScale = wBarrel + (1.0 - wBarrel) * truth.trueConstants.ECALEndcapCorrectionFactor
    ecal = (
        (deposit * responseE)[:, None]
        * ecalShare
        / (np.asarray(truth.ecalLayerTrueConstants)[None, :] * regionScale[:, None])
    )
    # ionisation before the interaction: a MIP track through the layers in front of it
    crossed = np.clip((start[:, None] - layerDepths[:, :-1]) / np.diff(layerDepths, axis=1), 0.0, 1.0)
    ecal += crossed * (truth.mipSimEnergy.ecal * pathFactor * (1.0 + truth.muon.ecalLandauWidth * MOYAL_MEAN))[:, None]
    hcalShares = geometry.hcal_region_weights(absCos, truth)
    hcalLayersCrossed = np.clip((start - ecalDepth) / layerLength, 0.0, hcalTruth.nLayers)
    hcalMip = (
        hcalLayersCrossed * truth.mipSimEnergy.hcalBarrel * pathFactor * (1.0 + truth.muon.hcalLandauWidth * MOYAL_MEAN)
    )
    hcalDeposit = deposit * hcalShare
    hcal = (hcalDeposit * responseH)[:, None] * hcalShares / _hcal_true_constants(truth)[None, :] + hcalMip[
        :, None
    ] * hcalShares
    lastLayers = hcalEnd - cdf(totalDepth - 5.0 * layerLength)
    deepest = start + h.profileScale * special.gammaincinv(shape, h.maxDepthQuantile)
    toEdge = np.clip(np.floor((totalDepth - deepest) / layerLength), 0, hcalTruth.nLayers - 1)
    hasHcal = (hcalDeposit > 0.05) | (hcalLayersCrossed > 0)
    return ShowerBank(
        sample=sample,
        random=random,
        events=events,
        cosTheta=cos,
        phi=phi,
        converted=np.zeros(events.size, dtype=bool),
        conversionShare=np.zeros(events.size),
        ecalPrompt=ecal,
        ecalBarrelWeight=wBarrel,
        hcalPrompt=hcal,
        lcalEnergy=kinetic * lcal,
        yokeSim=deposit * leak * truth.muonSystem.leakageCatchFraction / truth.muonSystem.digitisationConstant,
        emFraction=emFraction,
        hcalLastLayersFraction=np.divide(lastLayers, hcalShare, out=np.zeros_like(lastLayers), where=hcalShare > 1e-9),
        layersToEdge=np.where(hasHcal, toEdge, NO_HCAL_HITS).astype(np.int32),
        ecalHits=np.zeros((events.size, 2), dtype=np.int64),
        hcalHits=np.rint(hcalTruth.hitsPerGeV * hcalDeposit[:, None] * hcalShares).astype(np.int64),
        **_pandora_draws(sample, random, events),
    )


# ------------------------------------------------------------------------------------ muons
@functools.lru_cache(maxsize=64)
def landau_mode(width: float, smearing: float) -> float:
    """Mode of (1 + width * Moyal) * (1 + smearing * Gauss), so hits can be scaled to peak at 1."""
    if smearing <= 0:
        return 1.0
    u = np.linspace(1.0 - 6.0 * width, 1.0 + 40.0 * width, 900)
    x = (u - 1.0) / width
    density = np.exp(-0.5 * (x + np.exp(-x))) / width
    v = np.linspace(1.0 - 4.0 * width - 3.0 * smearing, 1.0 + 6.0 * width + 3.0 * smearing, 600)
    sigma = smearing * u[None, :]
    folded = (density[None, :] * np.exp(-0.5 * ((v[:, None] - u[None, :]) / sigma) ** 2) / sigma).sum(axis=1)
    i = int(np.clip(np.argmax(folded), 1, v.size - 2))
    a, b, c = folded[i - 1 : i + 2]
    return float(v[i] + 0.5 * (v[1] - v[0]) * (a - c) / (a - 2.0 * b + c))


def _unit_landau(
    random: EventRandom, owner_events: np.ndarray, index: np.ndarray, stream: str, width: float, smearing: float
) -> np.ndarray:
    moyal = -2.0 * np.log(np.abs(random.normal(owner_events, stream + "Landau", index)))
    smear = 1.0 + smearing * random.normal(owner_events, stream + "Smear", index)
    return (1.0 + width * moyal) * smear / landau_mode(width, smearing)


def _muons(sample: SampleFile, random: EventRandom, events: np.ndarray) -> MuonBank:
    truth, m = sample.truth, sample.truth.muon
    cos, phi = _direction(random, events)
    absCos = np.abs(cos)
    sin = np.sqrt(1.0 - absCos**2)
    n = events.size
    nEcal, nHcal, nYoke = truth.nEcalLayers, truth.hcal.nLayers, truth.muonSystem.nLayers
    perEvent = nEcal + nHcal + nYoke
    owner, index = hit_indices(np.full(n, perEvent))
    ownerEvents = events[owner]
    subdetector = np.select(
        [index < nEcal, index < nEcal + nHcal], [np.full(index.size, ECAL), np.full(index.size, HCAL_BARREL)], YOKE
    )
    isEcal, isHcal = subdetector == ECAL, subdetector == HCAL_BARREL
    layer = np.where(
        isEcal, truth.ecal.firstLayerNumber + index, np.where(isHcal, index - nEcal, index - nEcal - nHcal)
    )
    u = random.uniform(ownerEvents, "hitRegion", index)
    endcap = isEcal & (u > geometry.ecal_barrel_weight(absCos, truth)[owner])
    shares = np.cumsum(geometry.hcal_region_weights(absCos, truth), axis=1)[owner]
    hcalRegion = np.select([u < shares[:, 0], u < shares[:, 1]], [HCAL_BARREL, HCAL_ENDCAP], HCAL_RING)
    subdetector = np.where(isHcal, hcalRegion, subdetector)
    yokeBarrel = absCos[owner] < 0.5 * sum(truth.regions.hcalRing)
    barrelLike = (isEcal & ~endcap) | (subdetector == HCAL_BARREL) | ((subdetector == YOKE) & yokeBarrel)
    direction = np.maximum(np.where(barrelLike, sin[owner], absCos[owner]), geometry.MIN_PROJECTION)
    mip = truth.mipSimEnergy
    mpv = np.choose(subdetector, [mip.ecal, mip.hcalBarrel, mip.hcalEndcap, mip.hcalRing, mip.yoke])
    width = np.choose(subdetector, [m.ecalLandauWidth] + [m.hcalLandauWidth] * 3 + [m.yokeLandauWidth])
    smearing = np.choose(subdetector, [m.ecalSmearing] + [m.hcalSmearing] * 3 + [m.yokeSmearing])
    unit = np.empty(index.size)
    for code in np.unique(subdetector):
        selected = subdetector == code
        unit[selected] = _unit_landau(
            random,
            ownerEvents[selected],
            index[selected],
            f"hit{code}",
            float(width[selected][0]),
            float(smearing[selected][0]),
        )
    return MuonBank(
        sample=sample,
        random=random,
        events=events,
        cosTheta=cos,
        phi=phi,
        momentumSmear=m.trackResolution * random.normal(events, "momentum"),
        hitOwner=owner,
        hitSubdetector=subdetector,
        hitLayer=layer,
        hitEndcap=endcap,
        hitSimEnergy=mpv * unit / direction,
        hitDirectionFactor=direction,
    )


# ------------------------------------------------------------------------------------ jets
def _jets(sample: SampleFile, random: EventRandom, events: np.ndarray) -> JetBank:
    energy, j = sample.energy, sample.truth.jets
    u = random.uniform(events, "quarkFlavour")
    qPdg = np.select([u < 0.363, u < 0.637], [1, 2], 3)  # d, u, s by their Z branching ratios
    q = 4.0 - 8.0 * random.uniform(events, "quarkCosTheta")  # 1 + cos^2: solve c^3 + 3c + q = 0
    root = np.sqrt(q**2 / 4.0 + 1.0)
    quarkCos = np.cbrt(-q / 2.0 + root) + np.cbrt(-q / 2.0 - root)
    charged = j.chargedMultiplicity * (energy / 91.2) ** 0.3
    counts = np.stack(
        [
            np.maximum(random.poisson(charged, events, "nCharged"), 2),
            random.poisson(charged * j.photonsPerCharged, events, "nPhotons"),
            random.poisson(charged * j.neutralHadronsPerCharged, events, "nNeutralHadrons"),
        ],
        axis=1,
    )
    kind = np.repeat(np.tile(np.arange(3), events.size), counts.reshape(-1))
    owner, index = hit_indices(counts.sum(axis=1))
    ownerEvents = events[owner]
    weight = random.gamma(0.4, ownerEvents, "particleShare", index)  # hard leading particles
    group = owner * 3 + kind
    groupSum = np.bincount(group, weights=weight, minlength=events.size * 3)
    present = (counts > 0) * np.asarray(j.energyFractions)[None, :]
    fraction = present / present.sum(axis=1, keepdims=True)
    particleEnergy = energy * fraction.reshape(-1)[group] * weight / groupSum[group]
    side = np.where(random.uniform(ownerEvents, "jetSide", index) < 0.5, -1.0, 1.0)
    cos = np.clip(side * quarkCos[owner] + 0.3 * random.normal(ownerEvents, "particleAngle", index), -0.999, 0.999)
    uPdg = random.uniform(ownerEvents, "particlePdg", index)
    pdg = np.select(
        [kind == CHARGED, kind == PHOTON], [np.where(uPdg < 0.5, 211, -211), 22], np.where(uPdg < 0.5, 130, 2112)
    )
    # photon-ID training candidates: photons (signal), neutral hadrons and charged-hadron fragments
    nFragments = random.poisson(counts[:, CHARGED] * j.fragmentClustersPerCharged, events, "nFragments")
    fragmentOwner, fragmentIndex = hit_indices(nFragments)
    fragmentEnergy = 0.4 * random.exponential(events[fragmentOwner], "fragmentEnergy", fragmentIndex)
    neutral = kind != CHARGED
    candidateOwner = np.concatenate([owner[neutral], fragmentOwner])
    order = np.argsort(candidateOwner, kind="stable")
    candidateOwner = candidateOwner[order]
    candidateSignal = np.concatenate([kind[neutral] == PHOTON, np.zeros(fragmentOwner.size, dtype=bool)])[order]
    candidateEnergy = np.concatenate([particleEnergy[neutral], fragmentEnergy])[order]
    return JetBank(
        sample=sample,
        random=random,
        events=events,
        qPdg=qPdg,
        quarkCosTheta=quarkCos,
        owner=owner,
        kind=kind,
        pdg=pdg,
        energy=particleEnergy,
        cosTheta=cos,
        phi=2.0 * np.pi * random.uniform(ownerEvents, "particlePhi", index),
        candidateOwner=candidateOwner,
        candidateSignal=candidateSignal,
        candidateEnergy=candidateEnergy,
        candidateIndex=hit_indices(np.bincount(candidateOwner, minlength=events.size))[1],
    )


__all__ = [
    "CHARGED",
    "ECAL",
    "HCAL_BARREL",
    "HCAL_ENDCAP",
    "HCAL_RING",
    "JetBank",
    "MuonBank",
    "NEUTRAL_HADRON",
    "NO_HCAL_HITS",
    "PHOTON",
    "ShowerBank",
    "YOKE",
    "landau_mode",
    "simulate",
]
