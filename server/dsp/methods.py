"""The onset detection methods: one table row of callables and constants per method.

Everything else follows from :data:`METHOD_TABLE`: the allowed values of the ``method`` setting
(:data:`METHOD_NAMES`), the per-frame analysis (:mod:`server.dsp.plan`, :mod:`server.dsp.batch`), the
per-stream state (:mod:`server.dsp.state`), and what ``started`` and ``configured`` tell the browser
(:func:`describe`). Nothing outside this table tests a method's name.

How to add a method
-------------------
1. Write its pure functions in a module of its own, ``server/dsp/<name>.py``:

   - ``constants(grid) -> C``: read-only data built once per rate and grid and shared by every stream
     (a filterbank, weights of a network), or :func:`~server.dsp.odf.no_constants`;
   - ``features(spectra, C) -> rows``: spectra are ``(n_frames, n_bins)`` complex64 rfft rows of
     Hann-windowed frames; return ``(n_frames, n_features)``. Row ``i`` must depend on spectrum ``i``
     alone, bitwise, whatever the number of rows (no BLAS: row-wise numpy, or scipy.sparse products).

2. Give it *either* a classical comparison with the past ``lags`` feature rows (the detector keeps them)
   *or* a stream step with state of its own:

   - classical: ``lags(grid) -> tuple of int`` and ``compare(current, past, unit, floor) -> odf`` where
     ``past[k]`` holds the rows ``lags[k]`` frames back and ``floor`` is each frame's log-compression
     floor (from ``peaks`` and ``floor``);
   - stateful: ``initial_state(frame_plan) -> S``, the state of a new stream (e.g. per-layer buffers of
     past activations of a causal network, numpy arrays), and ``step(frame_plan, rows, states) ->
     (odfs, states)``: for several streams of one plan at once, each stream's new feature rows (oldest
     first) and its state in, each stream's ODF values (float64, one per row, already divided by the
     unit) and its new state out. A stream's values must depend on its own rows and state only, and
     feeding rows in two calls must give bitwise what one call gives (block-size invariance). Return new
     arrays rather than changing the state in place; states must pickle (numpy arrays, tuples, numbers).
     ``warmup`` frames of ODF are forced to 0 after a switch to the method mid-stream.

3. Add one :class:`OnsetMethod` row to :func:`_table` with its ``unit`` (ODF size of a clear onset, so
   ``threshold`` means the same for every method), ``mean_factor`` and ``attack_offset``, and a label and
   description for the browser. Then add the name to the ``method`` row of docs/protocol.md (a test checks
   it) and, if the default should change, ``DetectorSettings.method``.

``tests/test_dsp_methods.py`` registers a toy stateful method in a copy of the table and checks the
contract: identical ODF and onsets whatever the block size, pickling, batching and reset.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from server.dsp import fused, neural, neural_features, odf
from server.dsp.filterbank import log_filterbank
from server.dsp.peaks import BASELINES, PRE_AVG_S
from server.dsp.spectrum import FrameGrid

if TYPE_CHECKING:
    from server.dsp.plan import FramePlan

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]

# The learned methods' default look-ahead: `neural`'s forward mask (mask_ratio) judges a peak, which needs
# the frame after it (without look-ahead a rise is reported at its first frame, unmasked); `fused`'s
# constants were chosen at this look-ahead (bench/fused_picker.py) and it keeps it (bench/README.md,
# "Look-ahead 0 by default").
MASKED_LOOKAHEAD_MS = 10.0

# (frame plan, each stream's new feature rows, each stream's state) -> (each stream's ODF, its new state)
Step = Callable[["FramePlan", Sequence[Any], Sequence[Any]], tuple[list[F64], list[Any]]]


def _superflux_bank(grid: FrameGrid) -> Any:
    return log_filterbank(grid.sample_rate, grid.fft_size)


@dataclasses.dataclass(frozen=True)
class OnsetMethod:
    """One onset detection method: how its ODF is made from spectra, and its calibration.

    Attributes
    ----------
    name : str
        The value of the ``method`` setting.
    label, description : str
        For people (the browser's settings panel).
    constants : callable (FrameGrid) -> object
        Per-plan read-only data of ``features`` (and ``step``).
    features : callable (spectra, constants) -> ndarray (n_frames, n_features)
        Per-frame feature rows; row ``i`` depends on spectrum row ``i`` only.
    unit : float
        Typical size of a clear onset's ODF step; the ODF is divided by it so one ``threshold`` fits all.
    attack_offset : float
        How far an attack lies before the end of the frame where the ODF peaks, in frame lengths
        (calibrated at the default frame and hop, halfway between clicks and drum hits).
    rise_offset : float, optional
        Without look-ahead: the attack is searched from this far (in frame lengths) plus one hop back from
        the end of the first frame that rises; ``attack_offset`` when None (where the detection function
        peaks at the frame that first rises).
    mean_factor : float
        The adaptive threshold is ``mean_factor * baseline + threshold``; above 1 for detection
        functions that stay high on stationary noise (Bello et al., 2005).
    baseline : str
        Which statistic of the last ``PRE_AVG_S`` of the ODF that is: a name in
        :data:`~server.dsp.peaks.BASELINES` (``mean`` or ``median``).
    mask_ratio, mask_ms : float
        A forward mask (:func:`~server.dsp.peaks.mask_levels`): a peak must also reach ``mask_ratio``
        times every earlier ODF value, each decayed by ``exp(-age / mask_ms)``. 0: none.
    lags : callable (FrameGrid) -> tuple of int, optional
        Classical methods: which past feature rows each frame is compared with, frames back.
    compare : callable, optional
        Classical methods: ``(current, past, unit, floor) -> odf`` (:data:`server.dsp.odf.Compare`).
    peaks : callable (rows) -> ndarray (n_frames,), optional
        Classical methods: each frame's loudest component, which sets the compression floor.
    floor : (float32, float32)
        Classical methods: ``(scale, low)``; the floor is ``max(recent peak * scale, low)``.
    initial_state : callable (FramePlan) -> object, optional
        Stateful methods: a new stream's method state.
    step : callable, optional
        Stateful methods: :data:`Step`.
    warmup : int
        Stateful methods: frames whose ODF is 0 after a switch to this method mid-stream.
    delay_frames : int
        Frames the ODF itself waits after an attack before it peaks (a network trained to mark a later
        frame). The latency counts them on top of the peak picker's ``lookahead_ms``.
    grid_ms : (float, float), optional
        The only ``(frame_ms, hop_ms)`` the method runs at (a network trained on that grid); settings
        with another are refused.
    default_lookahead_ms : float
        The setting ``lookahead_ms`` when a client does not give one: 0 (an onset is reported with the
        frame that first tops the past) for most; 10 where the method's forward mask needs the peak.
    """

    name: str
    label: str
    description: str
    constants: Callable[[FrameGrid], Any]
    features: Callable[[C64, Any], Any]
    unit: float
    attack_offset: float
    rise_offset: float | None = None
    mean_factor: float = 1.0
    baseline: str = "mean"
    mask_ratio: float = 0.0
    mask_ms: float = 0.0
    lags: Callable[[FrameGrid], tuple[int, ...]] | None = None
    compare: odf.Compare | None = None
    peaks: Callable[[Any], F32] | None = None
    floor: tuple[np.float32, np.float32] = dataclasses.field(default_factory=odf.amplitude_floor)
    initial_state: Callable[[FramePlan], Any] | None = None
    step: Step | None = None
    warmup: int = 0
    delay_frames: int = 0
    grid_ms: tuple[float, float] | None = None
    default_lookahead_ms: float = 0.0

    def __post_init__(self) -> None:
        classical = self.lags is not None and self.compare is not None and self.peaks is not None
        stateful = self.initial_state is not None and self.step is not None
        if classical == stateful:
            raise ValueError(
                f"method {self.name!r} needs either lags, compare and peaks or initial_state and step"
            )
        if self.baseline not in BASELINES:
            raise ValueError(f"method {self.name!r}: baseline {self.baseline!r} is none of {list(BASELINES)}")

    @property
    def stateful(self) -> bool:
        return self.step is not None


def _table() -> Mapping[str, OnsetMethod]:
    superflux = OnsetMethod(
        name="superflux",
        label="SuperFlux",
        description="Log-filtered spectral flux; the best all-rounder, robust to vibrato.",
        constants=_superflux_bank,
        features=odf.band_magnitudes,
        lags=odf.half_overlap_lag,
        compare=odf.superflux_rise,
        peaks=odf.row_max,
        unit=0.03,
        attack_offset=0.24,
        # Chosen on the corpus's tune split and onsets-dev (README, "Onset accuracy"): the median lets a
        # soft hit soon after a loud one through (ghost notes, fills), where the mean held it back.
        baseline="median",
        mean_factor=1.25,
    )
    rows = (
        superflux,
        dataclasses.replace(
            superflux,
            name="superflux_half",
            label="SuperFlux, half-frame lag",
            description="SuperFlux against the frame half a frame back: more of slow, bowed, sung and padded "
            "attacks; more false onsets on real pitched recordings.",
            lags=odf.half_frame_lag,
            # Its detection function peaks about a hop later than superflux's (0.24): calibrated on clicks
            # and drum hits at a 10 ms look-ahead as superflux's was. The first frame that rises is where it
            # is for superflux, so the search without look-ahead keeps 0.24.
            attack_offset=0.38,
            rise_offset=0.24,
        ),
        OnsetMethod(
            name="complex",
            label="Complex domain",
            description="Phase and magnitude; finds soft and pitched attacks.",
            constants=odf.no_constants,
            features=odf.spectrum_itself,
            lags=odf.last_two,
            compare=odf.complex_domain,
            peaks=odf.row_abs_max,
            unit=0.02,
            attack_offset=0.32,
            mean_factor=1.5,
        ),
        OnsetMethod(
            name="hfc",
            label="High-frequency content",
            description="Favours bright, percussive hits (hi-hats, snares, picks).",
            constants=odf.hfc_weights,
            features=odf.weighted_power,
            lags=odf.half_overlap_lag,
            compare=odf.single_rise,
            peaks=odf.row_max,
            floor=odf.power_floor(),
            unit=0.3,
            attack_offset=0.2125,
        ),
        OnsetMethod(
            name="energy",
            label="Energy",
            description="Rise of loudness; cheapest, for loud isolated hits.",
            constants=odf.no_constants,
            features=odf.total_power,
            lags=odf.half_overlap_lag,
            compare=odf.single_rise,
            peaks=odf.row_max,
            floor=odf.power_floor(),
            unit=0.3,
            attack_offset=0.225,
        ),
        OnsetMethod(
            name="neural",
            label="Neural (learned)",
            description="A small causal network trained on rendered music; 40 ms frames and 10 ms hops only.",
            constants=neural.constants,
            features=neural.features,
            initial_state=neural.initial_state,
            step=neural.step,
            unit=neural.UNIT,
            attack_offset=neural.ATTACK_OFFSET,
            mean_factor=1.0,
            mask_ratio=neural.MASK_RATIO,
            mask_ms=neural.MASK_MS,
            warmup=neural.WARMUP_FRAMES,
            delay_frames=neural_features.TARGET_DELAY_FRAMES,
            grid_ms=(neural.FRAME_MS, neural.HOP_MS),
            default_lookahead_ms=MASKED_LOOKAHEAD_MS,
        ),
        OnsetMethod(
            name="fused",
            label="Fused (learned + SuperFlux)",
            description="The network's activation and SuperFlux summed frame by frame, each in its own unit; "
            "40 ms frames and 10 ms hops only.",
            constants=fused.constants,
            features=fused.features,
            initial_state=fused.initial_state,
            step=fused.step,
            unit=fused.UNIT,
            attack_offset=neural.ATTACK_OFFSET,
            mean_factor=fused.MEAN_FACTOR,
            baseline=fused.BASELINE,
            mask_ratio=fused.MASK_RATIO,
            mask_ms=fused.MASK_MS,
            warmup=neural.WARMUP_FRAMES,
            delay_frames=neural_features.TARGET_DELAY_FRAMES,
            grid_ms=(neural.FRAME_MS, neural.HOP_MS),
            default_lookahead_ms=MASKED_LOOKAHEAD_MS,
        ),
    )
    return types.MappingProxyType({row.name: row for row in rows})


METHOD_TABLE: Mapping[str, OnsetMethod] = _table()
METHOD_NAMES: tuple[str, ...] = tuple(METHOD_TABLE)


def describe(table: Mapping[str, OnsetMethod] = METHOD_TABLE) -> list[dict[str, Any]]:
    """Each method's name, label, description, ``mean_factor`` and ``baseline``, JSON-ready, in table
    order."""
    return [
        {"name": m.name, "label": m.label, "description": m.description, "mean_factor": m.mean_factor,
         "baseline": m.baseline}
        for m in table.values()
    ]


def detector_info(method: str) -> dict[str, Any]:
    """What a browser needs to draw a stream's threshold line and list the methods, JSON-ready.

    Sent in ``started`` and ``configured`` (docs/protocol.md) so the page copies none of it.

    Parameters
    ----------
    method : str
        The stream's effective ``method``.

    Returns
    -------
    dict
        ``methods`` (:func:`describe`), ``mean_factor`` and ``baseline`` of ``method`` and ``pre_avg_ms``,
        the length of the window whose baseline the threshold is added to, ms.
    """
    return {
        "methods": describe(),
        "mean_factor": METHOD_TABLE[method].mean_factor,
        "baseline": METHOD_TABLE[method].baseline,
        "pre_avg_ms": PRE_AVG_S * 1000.0,
    }
