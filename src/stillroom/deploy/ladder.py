"""The strictness ladder: accept, ask (uncertain) or reject one input from one or several models' logits.

Seed 000 §4.2; REFERENCE 5. With M members and raw logits ``z_m`` (no softmax: it would manufacture confidence):

- ``mu`` = mean over members of the max logit over the in-distribution classes (the default signal, below);
- ``mu < t1``: **reject**, weak signal;
- risk zone ``t1 <= mu < t2``: all members must agree on the top-1 class -> **accept**, else **uncertain**;
- strong zone ``mu >= t2``: agreement -> **accept**; moderate disagreement (a strict majority of members still
  votes for one class) -> **uncertain**; extreme disagreement (no class has a strict majority) -> **reject**.

Signal (issue 16 item 4). The quantity compared with ``t1``/``t2`` is ``score`` = mean over members of one post-hoc
OOD score of the member's ID columns (REFERENCE 4, higher = more ID; the functions of ``evaluate.ood.SCORES``):
``signal="maxlogit"`` (``score = mu``, REFERENCE 5 and the default, so ladder.json files written before the signal
existed decide exactly as before), ``"energy"`` (``logsumexp(z)``, T = 1) or ``"msp"`` (max softmax of the ID
columns; it saturates at 1.0 in float64 once the top-1 logit leads by ~37, and tied scores are accepted together).
Which one separates ID from OOD best differs per model (the open-set KD students: energy AUROC 0.59, MSP 0.66,
BENCHMARKS "Open set"), so ``signal="auto"`` keeps the candidate with the highest AUROC on the OOD validation logits
given to ``fit`` (ID positive; ties keep maxlogit, then energy, then msp), and falls back to maxlogit, saying why,
without them. ``fit_summary_["signal"]`` (saved in ladder.json) records the requested and chosen signal, every
candidate's validation AUROC and FPR@95TPR, and the reason; ``signal_`` is the one in force. A ladder on another
signal than maxlogit is written as format ``stillroom-ladder/2``, which code older than the signal refuses instead
of comparing, say, energy thresholds with max logits. The margin rule (top-1 minus top-2 logit) and the sink rule do
not depend on the signal.

KNN signal (issue 16 item 4). Logit scores reach val AUROC 0.55-0.64 on the open-set KD students, KNN on the
penultimate features 0.84 (BENCHMARKS "Open set"). ``signal="knn"`` thresholds ``score = -||z - b_(k)||``, minus the
distance of the L2-normalized pooled penultimate features ``z`` to the k-th nearest (k = 10) row of a bank of the
run's clean ID training features (Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors";
formula and numpy computation in ``deploy.knn``, equal to evaluation's pytorch-ood score). It needs features next to
the logits: ``fit`` takes ``val_features`` / ``ood_features`` and a fitted ``deploy.knn.KNNScorer`` (``knn``), and
``decide`` ``features``. Given them, ``auto`` also weighs knn (its val AUROC; ties keep the logit scores first);
without them it behaves as before. A knn ladder is one model only, written as format ``stillroom-ladder/3``, and
``save`` writes the bank beside the JSON file (``<stem>_knn_bank.npy``, no pickle) with its sha256 in the JSON
(``knn``); ``load`` refuses a bank whose sha256 differs.

RMD signal (issue 16 items 3-4). ``signal="rmd"`` thresholds the relative Mahalanobis score of the same pooled
features (Ren et al. 2021 §3; formula and numpy computation in ``deploy.rmd``, equal to evaluation's pytorch-ood
score ``rmd``): class Gaussians with one shared covariance against one background Gaussian, fitted on the run's ID
training rows and their style views. Measured (BENCHMARKS "Relative Mahalanobis"): it rejects near-OOD made of ID
parts (chimeras, blends) where every other score fails item 3's FPR bar, and rejects another artist's drawings of
the ID species more than max logit or knn. ``fit`` takes a fitted ``deploy.rmd.RMDScorer`` (``rmd``) with
``val_features`` (``auto`` weighs it after knn); one model only, format ``stillroom-ladder/3``; ``save`` writes the
parameters beside the JSON file (``<stem>_rmd.npz``, no pickle) with their sha256 in the JSON (``rmd``).

The predicted class is the soft vote: argmax of the mean over members of the softmax of the ID logits.

One model. A single model is trivially unanimous, so the ladder would collapse to one threshold and never say
"uncertain", which is exactly the output the feedback loop (seed 000 §4.3) needs. With one member, "agreement"
therefore means that the model agrees with itself: its top-1 logit beats its top-2 logit by at least a fitted
``margin_``. A small margin is the single-model analogue of disagreement (two classes compete), so it routes to
uncertain in both zones; there is no second opinion that could disagree *extremely*, so a single model never
rejects for disagreement, only for weak signal (or the sink).

OOD sink. With ``sink=True`` the last column of every member is the OOD sink (REFERENCE 2, target-dampened loss):
the input is rejected ("ood-sink") when the sink wins the soft vote over all K+1 columns; every other rule sees the
K ID columns only.

Sink signal (issue 16 items 4-5). The argmax rule uses the sink only when it wins; its graded output is a score too:
``signal="sink"`` thresholds ``score`` = mean over members of ``logsumexp(z_1..z_K) - z_sink`` =
``log((1 - p_sink) / p_sink)`` (softmax over the K+1 columns), the log-odds of evaluate's sink score ``1 - p_sink``
(seed 000 §2.4). Being a monotone map of it, it ranks inputs alike (same AUROC); unlike ``1 - p_sink`` it does not
saturate at 1.0 in float64 once the sink trails by ~37 logits, so confident ID inputs keep distinct scores. Only a
ladder with ``sink=True`` offers it (requested, or a candidate of "auto", weighed after the logit scores and before
knn on ties); it is written as format ``stillroom-ladder/2``, whose older readers refuse a signal they do not know.

Fused signal (issue 16 items 3-4). Each score fails somewhere else: held out of the sink's training, far sources
(emoji, game-icons) are rejected best by the sink (AUROC 0.97-0.99, BENCHMARKS "A sink on top of the patient
recipe"), near-OOD chimeras of two ID species by the logit and feature scores (0.94) where the sink gives 0.85.
``signal="fused"`` thresholds the mean of the available parts of ``FUSED_PARTS`` (maxlogit always, sink for a
``sink=True`` ladder, and one feature score: rmd when ``fit`` is given an RMD scorer and features, else knn when
given a KNN scorer; ``_fit_fused`` says why), each standardized by its mean and standard deviation over the clean
ID validation rows of ``fit``: ``score = mean_p (s_p - mean_p) / std_p``. No OOD row enters it (the weights are
equal, not fitted), so a source absent from validation cannot bias it. It needs at least two parts (a K-class
ladder without a feature score has one: refused). ``fused_`` records the parts and their ID statistics; written as
format ``stillroom-ladder/2`` (``/3`` with a knn or rmd part, which brings the bank or Gaussians file); ``auto``
weighs it last (ties keep every single score first).

Fitting (``fit``), on in-distribution validation logits, for a target acceptance ``a`` (fraction of ID samples whose
verdict is accept), nothing hard-coded:

- ensemble: the disagreement rate is a property of the members, so ``t1`` takes the whole budget: the largest value
  such that at least ``ceil(a * N)`` samples are unanimous with ``mu >= t1``;
- one model: the ID rejection budget ``1 - a`` is split, ``weak_share`` of it to the weak-signal rule (``t1`` = the
  ``weak_share * (1 - a)`` quantile of ``mu``) and the rest to the margin rule (``margin_`` = the largest margin that
  still accepts ``ceil(a * N)`` samples);
- ``t2`` = the ``strong_quantile`` quantile of ``mu`` over ID samples clearing ``t1`` (0.5: half of the accepted
  signal range counts as strong).

(Read ``score`` for ``mu`` in the fitting and deciding rules when the signal is not maxlogit.)

If the target cannot be reached (too few unanimous samples) the loosest thresholds are kept and a warning says what
acceptance was reached. Given OOD validation logits, ``fit`` also records the OOD rejection the thresholds give.

Structure gate. Logits alone cannot refuse an input the model is confidently wrong about, such as an all-black
square. ``fit_run_ladder`` therefore also fits a ``StructureGate`` (``stillroom.deploy.structure``) on the ID
training images of a silhouette run and stores it with the ladder (``structure_gate`` in ladder.json,
``Ladder.structure_``); the service applies it before the logit rules and rejects with reason "no-structure".
A ladder.json without it (written before it existed) loads with ``structure_ = None`` and serves without it.

Why one module of over 400 lines: the ladder's rules, fitting, decisions and file format are one algorithm (run-
level fitting and reporting: ``deploy.run_ladder``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import NotFittedError, StillroomError, atomic_write_json, read_json
from stillroom.deploy.knn import KNNScorer
from stillroom.deploy.rmd import RMDScorer
from stillroom.deploy.structure import StructureGate

__all__ = [
    "Ladder",
    "SIGNALS",
    "SINK_SIGNALS",
    "ALL_SIGNALS",
    "FEATURE_SIGNALS",
    "FUSED_SIGNALS",
    "FUSED_PARTS",
    "knn_bank_path",
    "rmd_path",
    "NotFittedError",
    "VERDICTS",
    "REASONS",
    "describe",
    "LADDER_FILE",
    "ladder_report",
]

FORMAT = "stillroom-ladder/1"
#: written when the signal is not maxlogit: older code (which knows only ``FORMAT``) refuses such a file
FORMAT_SIGNAL = "stillroom-ladder/2"
#: written when the signal is knn (it needs features and the bank file): older code refuses such a file
FORMAT_KNN = "stillroom-ladder/3"
#: candidate signals, in tie-breaking order (maxlogit first: REFERENCE 5's ``mu``); each is an ``evaluate.ood`` score
SIGNALS = ("maxlogit", "energy", "msp")
#: signals of a K+1 model's sink column (module docstring, "Sink signal"); ``sink=True`` ladders only
SINK_SIGNALS = ("sink",)
#: signals computed from penultimate features, not logits (module docstring, "KNN signal"); after the logit ones in
#: tie-breaking order
FEATURE_SIGNALS = ("knn", "rmd")
#: signals combining others (module docstring, "Fused signal"); last in tie-breaking order
FUSED_SIGNALS = ("fused",)
#: the scores ``fused`` may combine, in this order (those the ladder has)
FUSED_PARTS = ("maxlogit", "sink", "knn", "rmd")
ALL_SIGNALS = (*SIGNALS, *SINK_SIGNALS, *FEATURE_SIGNALS, *FUSED_SIGNALS)
#: how ``describe`` names each signal in place of "max logit"
_SIGNAL_WORDS = {
    "maxlogit": "max logit",
    "energy": "energy (logsumexp of the ID logits)",
    "msp": "max softmax",
    "sink": "sink score (log-odds of the ID classes against the OOD sink)",
    "knn": "KNN score (minus the distance to the k-th nearest training feature)",
    "rmd": "relative Mahalanobis score (class Gaussians against one background Gaussian of the training features)",
    "fused": "fused score (mean of the standardized max logit, sink and RMD or KNN scores)",
}
VERDICTS = ("accept", "uncertain", "reject")
# Reason codes returned by ``decide`` and what they mean (``describe`` picks the one-model wording).
REASONS = {
    "agreement": "signal above t1 and all members agree",
    "weak-signal": "mean max logit below t1: too weak to trust",
    "risk-zone-disagreement": "risk zone (t1 <= mu < t2) and the members disagree",
    "moderate-disagreement": "strong signal, a majority of the members agrees but not all",
    "extreme-disagreement": "strong signal but no class has a majority of the members",
    "ood-sink": "the OOD sink class wins the soft vote",
    "no-structure": "the silhouette lacks the structure of the training images (structure gate, before the model)",
}
_REASONS_ONE_MODEL = {
    "agreement": "signal above t1 and a clear top-1 margin",
    "weak-signal": "max logit below t1: too weak to trust",
    "risk-zone-disagreement": "risk zone (t1 <= max logit < t2) and the top-2 class is close",
    "moderate-disagreement": "strong signal but the top-2 class is close",
}


def describe(reason: str, n_members: int = 1, signal: str = "maxlogit") -> str:
    """Human wording of a reason code, for one model or an ensemble, naming the ladder's ``signal`` (``REASONS``
    words the default one, the max logit)."""
    if reason not in REASONS:
        raise StillroomError(f"unknown ladder reason {reason!r}; known: {', '.join(REASONS)}")
    if signal not in _SIGNAL_WORDS:
        raise StillroomError(f"unknown ladder signal {signal!r}; known: {', '.join(ALL_SIGNALS)}")
    text = _REASONS_ONE_MODEL.get(reason, REASONS[reason]) if n_members == 1 else REASONS[reason]
    return text.replace("max logit", _SIGNAL_WORDS[signal])


_KEYS = (
    "format", "params", "t1", "t2", "margin", "n_members", "num_classes", "target_accept", "fit_summary",
    "structure_gate", "signal", "knn", "fused", "rmd",
)  # fmt: skip


def rmd_path(ladder_path: str | Path) -> Path:
    """Where an rmd ladder's parameters live: beside the JSON file, ``ladder.json`` -> ``ladder_rmd.npz``."""
    p = Path(ladder_path)
    return p.with_name(f"{p.stem}_rmd.npz")


def knn_bank_path(ladder_path: str | Path) -> Path:
    """Where a knn ladder's bank lives: beside the JSON file, ``ladder.json`` -> ``ladder_knn_bank.npy``."""
    p = Path(ladder_path)
    return p.with_name(f"{p.stem}_knn_bank.npy")


def _as_members(logits_list: Any, name: str = "logits_list") -> list[np.ndarray]:
    """One (N, K) array, an (M, N, K) array, or a sequence of M (N, K) arrays -> list of M float64 (N, K) arrays."""
    if hasattr(logits_list, "detach"):  # a torch tensor
        logits_list = logits_list.detach().cpu().numpy()
    if isinstance(logits_list, np.ndarray):
        members = [logits_list] if logits_list.ndim == 2 else list(logits_list)
    elif isinstance(logits_list, Sequence) and len(logits_list) > 0:
        members = [m.detach().cpu().numpy() if hasattr(m, "detach") else m for m in logits_list]
    else:
        raise StillroomError(f"{name}: expected an (N, K) array or a non-empty list of them, got {type(logits_list)}")
    out = [np.asarray(m, dtype=np.float64) for m in members]
    if not out:
        raise StillroomError(f"{name}: no members")
    shape = out[0].shape
    for i, m in enumerate(out):
        if m.ndim != 2:
            raise StillroomError(f"{name}: member {i} must be 2-D (N, K), got shape {m.shape}")
        if m.shape != shape:
            raise StillroomError(f"{name}: member {i} has shape {m.shape}, member 0 has {shape}")
        if not np.isfinite(m).all():
            raise StillroomError(f"{name}: member {i} holds non-finite logits")
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_signal(signal: Any, allowed: Sequence[str], where: str) -> str:
    if signal not in allowed:
        raise StillroomError(f"{where}: signal must be one of {', '.join(allowed)}, got {signal!r}")
    return str(signal)


def _signal_score(ids: list[np.ndarray], signal: str) -> np.ndarray:
    """Mean over members of the OOD score ``signal`` (``evaluate.ood.SCORES``, higher = more ID) of each member's ID
    logits (N, K) -> (N,). The scores are evaluate's own functions (one formula per score, REFERENCE 4), on float64
    tensors; imported here so that ``import stillroom.deploy.ladder`` stays light."""
    import torch

    from stillroom.evaluate.ood import SCORES

    fn = SCORES.get(signal)
    return np.mean([fn(torch.from_numpy(np.ascontiguousarray(z))).numpy() for z in ids], axis=0)


def _sink_log_odds(members: list[np.ndarray]) -> np.ndarray:
    """Mean over members of ``logsumexp(z_ID) - z_sink`` = ``log((1 - p_sink) / p_sink)`` (module docstring, "Sink
    signal"), each member (N, K + 1) with the sink last -> (N,). scipy's logsumexp shifts by the row max: no
    overflow at any logit scale."""
    from scipy.special import logsumexp

    return np.mean([logsumexp(z[:, :-1], axis=1) - z[:, -1] for z in members], axis=0)


class Ladder:
    """Strictness ladder estimator (scikit-learn style).

    Args:
        sink: the last logit column of every member is an OOD sink class.
        weak_share: one model only: share of the ID rejection budget given to the weak-signal rule (the rest goes
            to the top-1 margin rule). In [0, 1].
        strong_quantile: ``t2`` is this quantile of ``mu`` over ID validation samples that clear ``t1``. In [0, 1].
        signal: the score compared with ``t1``/``t2``: one of ``SIGNALS`` or "auto" (module docstring). Default
            "maxlogit" (REFERENCE 5).

    Fitted attributes: ``t1_``, ``t2_``, ``margin_`` (None for ensembles), ``n_members_``, ``num_classes_`` (ID
    classes), ``target_accept_``, ``signal_`` (the signal in force, never "auto"), ``fit_summary_`` (achieved ID
    verdict rates, OOD rates when given, and ``"signal"``: how the signal was chosen).
    ``structure_``: the ``StructureGate`` applied before the logit rules (set by ``fit_run_ladder``; None: none).
    ``knn_``: the ``deploy.knn.KNNScorer`` (bank) of a ladder whose signal uses knn (``uses_knn``), else None.
    ``fused_``: ``{"parts", "mean", "std"}`` of the fused signal (ID validation statistics per part), None when the
    signal in force is another.
    """

    def __init__(
        self, sink: bool = False, weak_share: float = 0.5, strong_quantile: float = 0.5, signal: str = "maxlogit"
    ) -> None:
        for name, v in (("weak_share", weak_share), ("strong_quantile", strong_quantile)):
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise StillroomError(f"Ladder: {name} must be a number in [0, 1], got {v!r}")
        self.sink = bool(sink)
        self.weak_share = float(weak_share)
        self.strong_quantile = float(strong_quantile)
        self.signal = _check_signal(signal, (*ALL_SIGNALS, "auto"), "Ladder")
        if self.signal == "sink" and not self.sink:  # one check for fit, from_thresholds and refits
            raise StillroomError("Ladder: signal='sink' needs a K+1 model and sink=True")
        self.structure_: StructureGate | None = None
        self.knn_: KNNScorer | None = None
        self.rmd_: RMDScorer | None = None
        self.fused_: dict[str, list] | None = None

    @property
    def uses_features(self) -> bool:
        """Whether the signal in force scores penultimate features (knn, rmd, or fused with either as a part):
        callers must pass ``features`` and serve the fp32 features model."""
        return self.uses_knn or self.uses_rmd

    @property
    def uses_knn(self) -> bool:
        """Whether the signal in force needs the KNN bank (knn, or fused with a knn part)."""
        return _uses(self._signal_in_force(), self.fused_, "knn")

    @property
    def uses_rmd(self) -> bool:
        """Whether the signal in force needs the RMD Gaussians (rmd, or fused with an rmd part)."""
        return _uses(self._signal_in_force(), self.fused_, "rmd")

    def _signal_in_force(self) -> str:
        """The fitted signal; before fitting the requested one ("auto" has chosen nothing yet: maxlogit)."""
        fitted = getattr(self, "signal_", None)
        return fitted or ("maxlogit" if self.signal == "auto" else self.signal)

    # --- signals -----------------------------------------------------------------------------------------------

    def signals(self, logits_list: Any, signal: str | None = None, features: Any = None) -> dict[str, np.ndarray]:
        """Per-sample quantities the rules use: ``mu`` (mean max ID logit), ``score`` (the signal in force, compared
        with ``t1``/``t2``; equal to ``mu`` for maxlogit), ``pred`` (soft vote), ``agree``, ``majority``, ``margin``
        (top-1 minus top-2 ID logit, mean over members), ``sink_top``, ``votes`` (M, N) member top-1 classes and
        ``num_classes`` (K, the ID classes). ``signal``: compute ``score`` for this one instead (fitting).
        ``features`` (N, D): the one member's pooled penultimate features, needed by the knn signal only."""
        members = _as_members(logits_list)
        k = self._num_id(members[0].shape[1])
        ids = [m[:, :k] for m in members]
        mu = np.mean([z.max(axis=1) for z in ids], axis=0)  # (N,)
        signal = signal or self._signal_in_force()
        if signal == "knn":
            score = self._knn_score(features, len(members), len(mu))
        elif signal == "rmd":
            score = self._rmd_score(features, len(members), len(mu))
        elif signal == "fused":
            score = self._fused_score(members, mu, features)
        elif signal == "sink":
            score = self._sink_score(members)
        else:
            score = mu if signal == "maxlogit" else _signal_score(ids, signal)  # (N,)
        votes = np.stack([z.argmax(axis=1) for z in ids])  # (M, N)
        pred = np.mean([_softmax(z) for z in ids], axis=0).argmax(axis=1)  # (N,) soft vote over ID classes
        top2 = [np.sort(z, axis=1)[:, -2:] for z in ids]
        margin = np.mean([t[:, 1] - t[:, 0] for t in top2], axis=0)
        m = len(members)
        # Size of the largest voting block per sample: count of the plurality class.
        plurality = np.stack([(votes == votes[i]).sum(axis=0) for i in range(m)]).max(axis=0)
        if self.sink:
            sink_top = np.mean([_softmax(z) for z in members], axis=0).argmax(axis=1) == k
        else:
            sink_top = np.zeros(len(mu), dtype=bool)
        return {
            "mu": mu,
            "score": score,
            "pred": pred,
            "votes": votes,
            "agree": plurality == m,
            "majority": plurality * 2 > m,
            "margin": margin,
            "sink_top": sink_top,
            "num_classes": np.int64(k),
        }

    def _knn_score(self, features: Any, n_members: int, n: int) -> np.ndarray:
        """(N,) KNN score of ``features`` with the ladder's bank (``knn_``), checked against the logits' shape."""
        return self._feature_score("knn", self.knn_, "a KNN bank (fit(..., knn=KNNScorer)", features, n_members, n)

    def _rmd_score(self, features: Any, n_members: int, n: int) -> np.ndarray:
        """(N,) RMD score of ``features`` with the ladder's fitted Gaussians (``rmd_``), checked likewise."""
        return self._feature_score("rmd", self.rmd_, "its Gaussians (fit(..., rmd=RMDScorer)", features, n_members, n)

    @staticmethod
    def _feature_score(signal: str, scorer: Any, what: str, features: Any, n_members: int, n: int) -> np.ndarray:
        """``scorer.score(features)`` after the checks every feature signal needs (one model, (n, D) features)."""
        if scorer is None:
            raise StillroomError(f"Ladder: the {signal} signal needs {what} or Ladder.load)")
        if features is None:
            raise StillroomError(f"Ladder: the {signal} signal needs the penultimate features of the inputs")
        if n_members != 1:
            raise StillroomError(f"Ladder: the {signal} signal serves one model, got {n_members} members")
        f = np.asarray(features)
        if f.ndim != 2 or len(f) != n:
            raise StillroomError(f"Ladder: features of shape {f.shape} for {n} samples; expected ({n}, D)")
        return scorer.score(f)

    def _part_scores(
        self, parts: Sequence[str], members: list[np.ndarray], mu: np.ndarray, features: Any
    ) -> np.ndarray:
        """(P, N) raw scores of the fused signal's ``parts`` (``FUSED_PARTS`` names); ``mu`` is maxlogit's."""
        raw = {"maxlogit": lambda: mu, "sink": lambda: self._sink_score(members)}
        raw["knn"] = lambda: self._knn_score(features, len(members), len(mu))
        raw["rmd"] = lambda: self._rmd_score(features, len(members), len(mu))
        return np.stack([raw[p]() for p in parts])

    def _fused_score(self, members: list[np.ndarray], mu: np.ndarray, features: Any) -> np.ndarray:
        """(N,) mean over the fitted parts of ``(s_p - mean_p) / std_p`` (module docstring, "Fused signal")."""
        if self.fused_ is None:
            raise StillroomError("Ladder: the fused signal needs its ID statistics (fit(...) or Ladder.load)")
        f = self.fused_
        z = self._part_scores(f["parts"], members, mu, features)
        return ((z - np.asarray(f["mean"])[:, None]) / np.asarray(f["std"])[:, None]).mean(axis=0)

    def _fit_fused(
        self, val: list[np.ndarray], features: Any, has_knn: bool, has_rmd: bool = False
    ) -> dict[str, list] | None:
        """The fused signal's parts and their mean and std over the ID validation rows ``val``; None with fewer
        than two parts (or a part constant on validation, which cannot be standardized). One feature part: rmd when
        it is there, else knn. Measured on the demo's students (BENCHMARKS "The demo plans its epochs", "Relative
        Mahalanobis"): MaxLogit + RMD rejects near-OOD best (blends FPR@95 0.147 vs 0.307 with RMD + KNN)."""
        feature = "rmd" if has_rmd else "knn" if has_knn else None
        parts = [p for p in FUSED_PARTS if p == "maxlogit" or (p == "sink" and self.sink) or p == feature]
        if len(parts) < 2:
            return None
        k = self._num_id(val[0].shape[1])
        mu = np.mean([m[:, :k].max(axis=1) for m in val], axis=0)
        z = self._part_scores(parts, val, mu, features)  # (P, N)
        std = z.std(axis=1)
        if not (np.isfinite(std).all() and (std > 0).all()):
            return None
        return {"parts": parts, "mean": z.mean(axis=1).tolist(), "std": std.tolist()}

    def _sink_score(self, members: list[np.ndarray]) -> np.ndarray:
        if not self.sink:
            raise StillroomError("Ladder: the sink signal needs a K+1 model (sink=True)")
        return _sink_log_odds(members)

    def _num_id(self, k_total: int) -> int:
        k = k_total - 1 if self.sink else k_total
        if k < 2:
            raise StillroomError(f"Ladder: need >= 2 in-distribution classes, got {k} (sink={self.sink})")
        return k

    # --- fitting -----------------------------------------------------------------------------------------------

    def _choose_signal(
        self,
        val: list[np.ndarray],
        ood: list[np.ndarray] | None,
        knn_scores: tuple[np.ndarray, np.ndarray] | None = None,
        fused_scores: tuple[np.ndarray, np.ndarray] | None = None,
        rmd_scores: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """(signal to fit, how it was chosen). With OOD validation rows every candidate's AUROC and FPR@95TPR (ID
        positive, ``evaluate.ood.ood_metrics``) are recorded; "auto" keeps the highest AUROC, the first of
        ``SIGNALS`` (then sink, then knn) on a tie, and maxlogit without OOD rows. A sink ladder weighs the sink
        signal too; ``knn_scores`` (val ID, val OOD KNN scores): knn is a candidate too; ``rmd_scores`` and
        ``fused_scores`` likewise for the rmd and fused signals."""
        sel: dict[str, Any] = {"requested": self.signal}
        names: tuple[str, ...] = SIGNALS
        if ood is not None and len(ood[0]) and len(val[0]):
            from stillroom.evaluate.ood import ood_metrics

            if len(ood) != len(val) or ood[0].shape[1] != val[0].shape[1]:
                raise StillroomError(
                    f"Ladder.fit: ood_logits_list has {len(ood)} member(s) of {ood[0].shape[1]} columns, the "
                    f"validation logits {len(val)} of {val[0].shape[1]}"
                )
            k = self._num_id(val[0].shape[1])
            met = {
                name: ood_metrics(_signal_score([m[:, :k] for m in val], name),
                                  _signal_score([m[:, :k] for m in ood], name))
                for name in SIGNALS
            }  # fmt: skip
            if self.sink:
                met["sink"] = ood_metrics(self._sink_score(val), self._sink_score(ood))
                names = (*names, *SINK_SIGNALS)
            for name, pair in (("knn", knn_scores), ("rmd", rmd_scores)):  # FEATURE_SIGNALS, in order
                if pair is not None:
                    met[name] = ood_metrics(*pair)
                    names = (*names, name)
            if fused_scores is not None:
                met["fused"] = ood_metrics(*fused_scores)
                names = (*names, *FUSED_SIGNALS)
            sel["val_auroc"] = {name: met[name]["auroc"] for name in names}
            sel["val_fpr_at_95_tpr"] = {name: met[name]["fpr_at_95_tpr"] for name in names}
            sel["n_id"], sel["n_ood"] = len(val[0]), len(ood[0])
        if self.signal != "auto":
            chosen, sel["reason"] = self.signal, f"set by the caller (signal={self.signal!r})"
        elif "val_auroc" in sel:
            auroc = sel["val_auroc"]
            chosen = max(names, key=lambda name: auroc[name])  # max keeps the first on a tie: maxlogit first
            listed = ", ".join(f"{name} {auroc[name]:.4f}" for name in names)
            sel["reason"] = (
                f"auto: highest validation AUROC (ID positive; {sel['n_id']} ID / {sel['n_ood']} OOD rows) of "
                f"{listed}; ties keep the first of {', '.join(names)}"
            )
        else:
            chosen = "maxlogit"
            sel["reason"] = "auto without OOD validation logits: no AUROC to choose by, so maxlogit (REFERENCE 5's mu)"
        sel["chosen"] = chosen
        return chosen, sel

    def fit(
        self,
        val_logits_list: Any,
        target_accept: float = 0.95,
        ood_logits_list: Any = None,
        val_features: Any = None,
        ood_features: Any = None,
        knn: KNNScorer | None = None,
        rmd: RMDScorer | None = None,
    ) -> Ladder:
        """Fit ``t1_``, ``t2_`` (and ``margin_`` for one model) on ID validation logits; return self.

        ``target_accept`` in (0, 1]: wanted fraction of ID validation samples accepted. ``ood_logits_list``
        (optional, OOD validation logits of the same members): the candidate signals' AUROC, which
        ``signal="auto"`` chooses by, and the OOD rejection reached; never used to place the thresholds.
        ``knn`` (a fitted ``KNNScorer``) with ``val_features`` (N, D) (and ``ood_features`` for the OOD rows): the
        knn signal is available (required by ``signal="knn"``, a candidate of "auto"); ``knn_`` keeps the scorer
        when knn is chosen, else None. ``rmd`` (a fitted ``deploy.rmd.RMDScorer``) likewise for the rmd signal
        (``rmd_``).
        """
        if not (isinstance(target_accept, int | float) and 0.0 < target_accept <= 1.0):
            raise StillroomError(f"Ladder.fit: target_accept must be in (0, 1], got {target_accept!r}")
        val = _as_members(val_logits_list, "val_logits_list")
        ood = None if ood_logits_list is None else _as_members(ood_logits_list, "ood_logits_list")
        has_knn = knn is not None and val_features is not None
        if self.signal == "knn" and not has_knn:
            raise StillroomError("Ladder.fit: signal='knn' needs knn=KNNScorer().fit(train features) and val_features")
        has_rmd = rmd is not None and val_features is not None and len(val) == 1
        if self.signal == "rmd" and not has_rmd:
            raise StillroomError("Ladder.fit: signal='rmd' needs one model, rmd=RMDScorer().fit(...) and val_features")
        knn_scores = rmd_scores = None
        self.knn_, self.knn_record_ = (knn if has_knn else None), None
        self.rmd_, self.rmd_record_ = (rmd if has_rmd else None), None
        if has_rmd and ood is not None and ood_features is not None:
            rmd_scores = (self._rmd_score(val_features, 1, len(val[0])), self._rmd_score(ood_features, 1, len(ood[0])))
        self.fused_ = self._fit_fused(val, val_features, has_knn and len(val) == 1, has_rmd)
        if self.signal == "fused" and self.fused_ is None:
            raise StillroomError(
                "Ladder.fit: signal='fused' needs a second score besides maxlogit: a sink (sink=True) or an rmd or knn "
                "scorer with val_features, each varying over the validation rows"
            )
        if has_knn and ood is not None and ood_features is not None and len(val) == 1:
            knn_scores = (self._knn_score(val_features, 1, len(val[0])), self._knn_score(ood_features, 1, len(ood[0])))
        fused_scores = None
        f_ok = self.fused_ is not None and ood is not None and len(ood) == len(val) and len(ood[0])
        if (
            f_ok
            and ood[0].shape[1] == val[0].shape[1]
            and (knn_scores is not None or "knn" not in self.fused_["parts"])
            and (rmd_scores is not None or "rmd" not in self.fused_["parts"])
        ):
            fused_scores = (
                self.signals(val, signal="fused", features=val_features)["score"],
                self.signals(ood, signal="fused", features=ood_features)["score"],
            )
        signal, selection = self._choose_signal(val, ood, knn_scores, fused_scores, rmd_scores)
        if signal == "fused":
            selection["fused"] = self.fused_
        else:
            self.fused_ = None
        if signal == "knn" or (signal == "fused" and "knn" in self.fused_["parts"]):
            selection["knn"] = {"k": knn.k, "bank_rows": int(knn.bank_.shape[0]), "dim": knn.dim}
        else:
            self.knn_ = None
        if signal == "rmd" or (signal == "fused" and "rmd" in self.fused_["parts"]):
            selection["rmd"] = {"classes": len(rmd.mu_), "dim": rmd.dim}
        else:
            self.rmd_ = None
        s = self.signals(val, signal=signal, features=val_features)
        n, m = len(s["mu"]), s["votes"].shape[0]
        if n == 0:
            raise StillroomError("Ladder.fit: no validation samples")
        need = min(n, math.ceil(target_accept * n - 1e-9))  # accepted samples wanted
        # the rules below read ``mu`` in the module docstring: here the chosen signal's score
        mu, live = s["score"], ~s["sink_top"]
        if m >= 2:
            eligible = live & s["agree"]
            t1 = self._kth_largest(mu[eligible], need, "unanimous samples")
            margin = None
        else:
            n_weak = math.floor(self.weak_share * (1.0 - target_accept) * n + 1e-9)
            t1 = float(np.sort(mu)[min(n_weak, n - 1)])
            eligible = live & (mu >= t1)
            margin = self._kth_largest(s["margin"][eligible], need, f"samples with mu >= t1={t1:.4g}")
            margin = max(margin, 0.0)
        passing = mu[live & (mu >= t1)]
        t2 = float(np.quantile(passing, self.strong_quantile)) if passing.size else t1
        self.t1_, self.t2_, self.margin_ = float(t1), max(float(t2), float(t1)), margin
        self.n_members_, self.num_classes_ = m, int(s["num_classes"])
        self.target_accept_, self.signal_ = float(target_accept), signal
        summary: dict[str, Any] = {"n_val": n, "id": _rates(self.decide(val, features=val_features))}
        if ood is not None:
            summary["n_ood"] = len(ood[0])
            summary["ood"] = _rates(self.decide(ood, features=ood_features))
        summary["signal"] = selection
        self.fit_summary_ = summary
        achieved = summary["id"]["accept"]
        if achieved + 1e-12 < target_accept:
            warnings.warn(
                f"Ladder.fit: target ID acceptance {target_accept:.3f} unreachable; reached {achieved:.3f} "
                f"(limited by {'member disagreement' if m >= 2 else 'the sink'} on validation data)",
                stacklevel=2,
            )
        return self

    @staticmethod
    def _kth_largest(values: np.ndarray, k: int, what: str) -> float:
        """Threshold accepting >= k of ``values`` (``v >= t``); the loosest one (the minimum) when fewer exist."""
        if values.size == 0:
            warnings.warn(f"Ladder.fit: no {what} on validation data; nothing can be accepted", stacklevel=3)
            return math.inf
        if k > values.size:
            return float(values.min())
        return float(np.sort(values)[::-1][k - 1])

    @classmethod
    def from_thresholds(
        cls,
        t1: float,
        t2: float,
        n_members: int,
        num_classes: int,
        margin: float | None = None,
        sink: bool = False,
        signal: str = "maxlogit",
        knn: KNNScorer | None = None,
        rmd: RMDScorer | None = None,
    ) -> Ladder:
        """A ladder with given thresholds (fitted elsewhere, or hand-built for tests) on ``signal`` (one of
        ``ALL_SIGNALS``; knn needs the fitted ``knn`` scorer); ``margin`` is required for one member and ignored
        (None) for ensembles."""
        if signal == "fused":
            raise StillroomError("Ladder.from_thresholds: the fused signal carries ID statistics; fit it instead")
        _check_signal(signal, (*SIGNALS, *SINK_SIGNALS, *FEATURE_SIGNALS), "Ladder.from_thresholds")
        if signal == "knn" and (knn is None or n_members != 1):
            raise StillroomError("Ladder.from_thresholds: signal='knn' needs one member and a fitted knn scorer")
        if signal == "rmd" and (rmd is None or n_members != 1):
            raise StillroomError("Ladder.from_thresholds: signal='rmd' needs one member and a fitted rmd scorer")
        if not (math.isfinite(t1) and math.isfinite(t2) and t1 <= t2):
            raise StillroomError(f"Ladder.from_thresholds: need finite t1 <= t2, got t1={t1!r}, t2={t2!r}")
        if n_members < 1 or num_classes < 2:
            raise StillroomError(
                f"Ladder.from_thresholds: n_members >= 1 and num_classes >= 2, got {n_members}, {num_classes}"
            )
        if n_members == 1 and (margin is None or not margin >= 0):
            raise StillroomError(f"Ladder.from_thresholds: one member needs a margin >= 0, got {margin!r}")
        lad = cls(sink=sink, signal=signal)
        lad.t1_, lad.t2_, lad.signal_ = float(t1), float(t2), signal
        lad.margin_ = float(margin) if n_members == 1 else None
        lad.n_members_, lad.num_classes_ = int(n_members), int(num_classes)
        lad.target_accept_, lad.fit_summary_ = None, {}
        lad.knn_ = knn if signal == "knn" else None
        lad.rmd_ = rmd if signal == "rmd" else None
        return lad

    # --- deciding ----------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "t1_"):
            raise NotFittedError("Ladder: call fit(...) or Ladder.load(...) before deciding")

    def decide(self, logits_list: Any, features: Any = None) -> list[tuple[str, str]]:
        """``(verdict, reason)`` per sample; verdict in ``VERDICTS``, reason a key of ``REASONS``. ``features``:
        (N, D) penultimate features, needed by a knn ladder only."""
        return [(v, r) for v, r, _ in self._decide(logits_list, features)]

    def decide_detailed(self, logits_list: Any, features: Any = None) -> list[dict[str, Any]]:
        """Like ``decide`` with the soft-vote prediction and the signals per sample (for telemetry): ``mu`` (mean max
        logit), ``score`` (the signal ``signal_`` compared with the thresholds), ``margin`` and the members' votes."""
        self._check_fitted()
        s = self.signals(logits_list, features=features)
        out = []
        for i, (verdict, reason, _) in enumerate(self._decide_from(s)):
            out.append(
                {
                    "verdict": verdict,
                    "reason": reason,
                    "pred": int(s["pred"][i]),
                    "mu": float(s["mu"][i]),
                    "score": float(s["score"][i]),
                    "margin": float(s["margin"][i]),
                    "votes": [int(v) for v in s["votes"][:, i]],
                }
            )
        return out

    def _decide(self, logits_list: Any, features: Any = None) -> list[tuple[str, str, int]]:
        self._check_fitted()
        return self._decide_from(self.signals(logits_list, features=features))

    def _decide_from(self, s: dict[str, np.ndarray]) -> list[tuple[str, str, int]]:
        n_members = s["votes"].shape[0]
        if n_members != self.n_members_:
            raise StillroomError(f"Ladder: fitted for {self.n_members_} member(s), got {n_members}")
        if int(s["num_classes"]) != self.num_classes_:
            raise StillroomError(f"Ladder: fitted for {self.num_classes_} ID classes, got {int(s['num_classes'])}")
        single = n_members == 1
        agree = s["margin"] >= self.margin_ if single else s["agree"]
        out = []
        for i in range(len(s["score"])):
            mu, pred = s["score"][i], int(s["pred"][i])  # mu: the signal in force (module docstring)
            if s["sink_top"][i]:
                out.append(("reject", "ood-sink", pred))
            elif mu < self.t1_:
                out.append(("reject", "weak-signal", pred))
            elif agree[i]:
                out.append(("accept", "agreement", pred))
            elif mu < self.t2_:
                out.append(("uncertain", "risk-zone-disagreement", pred))
            elif single or s["majority"][i]:
                out.append(("uncertain", "moderate-disagreement", pred))
            else:
                out.append(("reject", "extreme-disagreement", pred))
        return out

    def structure_problems(self, mask: np.ndarray) -> list[str]:
        """Why the structure gate refuses the served silhouette ``mask`` (S, S); empty when it passes or when the
        ladder has no gate. A refusal is verdict "reject", reason "no-structure", whatever the logits say."""
        gate = getattr(self, "structure_", None)
        return [] if gate is None else gate.problems(mask)

    # --- persistence -------------------------------------------------------------------------------------------

    def thresholds(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "t1": self.t1_, "t2": self.t2_, "margin": self.margin_, "n_members": self.n_members_,
            "signal": self.signal_,
        }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        # params keep their pre-signal keys (the requested signal is in fit_summary["signal"]): a maxlogit ladder
        # stays readable by older code; another signal bumps the format so that older code refuses it
        fmt = FORMAT_KNN if self.uses_features else FORMAT if self.signal_ == "maxlogit" else FORMAT_SIGNAL
        return {
            "format": fmt,
            "params": {"sink": self.sink, "weak_share": self.weak_share, "strong_quantile": self.strong_quantile},
            "signal": self.signal_,
            "t1": self.t1_,
            "t2": self.t2_,
            "margin": self.margin_,
            "n_members": self.n_members_,
            "num_classes": self.num_classes_,
            "target_accept": self.target_accept_,
            "fit_summary": self.fit_summary_,
            "structure_gate": None if self.structure_ is None else self.structure_.to_dict(),
            "knn": getattr(self, "knn_record_", None) if self.uses_knn else None,
            "fused": self.fused_ if self.signal_ == "fused" else None,
            "rmd": getattr(self, "rmd_record_", None) if self.uses_rmd else None,
        }

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the fitted ladder as JSON (atomically); ``extra`` (e.g. the members' weight sha256) is kept. A knn
        ladder first writes its bank beside it (``knn_bank_path``) and records the bank's sha256 in ``knn``; any
        other signal removes a bank left there by an earlier knn fit."""
        self._check_fitted()
        bank = knn_bank_path(path)
        if self.uses_knn:
            if self.knn_ is None:
                raise StillroomError("Ladder.save: a knn ladder without its KNN bank")
            self.knn_record_ = self.knn_.save_bank(bank)
        else:
            bank.unlink(missing_ok=True)
        params = rmd_path(path)
        if self.uses_rmd:
            if self.rmd_ is None:
                raise StillroomError("Ladder.save: an rmd ladder without its RMD parameters")
            self.rmd_record_ = self.rmd_.save(params, fit_rows=getattr(self.rmd_, "fit_rows_", None))
        else:
            params.unlink(missing_ok=True)
        return atomic_write_json(path, {**self.to_dict(), **(extra or {})})

    @classmethod
    def load(cls, path: str | Path) -> Ladder:
        """A saved ladder; a file without ``signal`` (written before it existed) is a maxlogit ladder."""
        d = read_json(path)
        if d.get("format") not in (FORMAT, FORMAT_SIGNAL, FORMAT_KNN):
            raise StillroomError(
                f"{path}: format {d.get('format')!r}, expected {FORMAT!r}, {FORMAT_SIGNAL!r} or {FORMAT_KNN!r}"
            )
        signal = d.get("signal", "maxlogit")
        fused = _fused_record(d.get("fused"), path) if signal == "fused" else None
        uses_knn, uses_rmd = _uses(signal, fused, "knn"), _uses(signal, fused, "rmd")
        want = FORMAT_KNN if uses_knn or uses_rmd else FORMAT if signal == "maxlogit" else FORMAT_SIGNAL
        if signal not in ALL_SIGNALS or (signal != "maxlogit" and d["format"] != want):
            raise StillroomError(f"{path}: malformed ladder (signal {signal!r} in format {d['format']!r})")
        try:
            lad = cls(**d["params"])
            lad.t1_, lad.t2_ = float(d["t1"]), float(d["t2"])
            lad.margin_ = None if d["margin"] is None else float(d["margin"])
            lad.n_members_, lad.num_classes_ = int(d["n_members"]), int(d["num_classes"])
            lad.target_accept_ = None if d["target_accept"] is None else float(d["target_accept"])
        except (KeyError, TypeError, ValueError) as err:
            raise StillroomError(f"{path}: malformed ladder ({err!r})") from None
        if lad.n_members_ == 1 and lad.margin_ is None:
            raise StillroomError(f"{path}: a one-model ladder needs a margin")
        lad.fit_summary_ = d.get("fit_summary", {})
        lad.signal_ = signal
        # a refit of the loaded ladder asks for what the original fit asked for ("auto" chooses again)
        lad.signal = (lad.fit_summary_.get("signal") or {}).get("requested", signal)
        _check_signal(lad.signal, (*ALL_SIGNALS, "auto"), str(path))
        if ("sink" in (signal, lad.signal) or "sink" in (fused or {}).get("parts", ())) and not lad.sink:
            raise StillroomError(f"{path}: malformed ladder (signal 'sink' without a sink class)")
        lad.fused_ = fused
        if uses_knn:  # the bank beside the file, checked by sha256 (deploy.knn)
            lad.knn_ = KNNScorer.load(Path(path).parent, d.get("knn"), source=str(path))
            lad.knn_record_ = d["knn"]
            if lad.n_members_ != 1:
                raise StillroomError(f"{path}: a knn ladder serves one model, this one has {lad.n_members_}")
        if uses_rmd:  # the Gaussians beside the file, checked by sha256 (deploy.rmd)
            lad.rmd_ = RMDScorer.load(Path(path).parent, d.get("rmd"), source=str(path))
            lad.rmd_record_ = d["rmd"]
            if lad.n_members_ != 1:
                raise StillroomError(f"{path}: an rmd ladder serves one model, this one has {lad.n_members_}")
        if d.get("structure_gate") is not None:  # absent from ladder.json files written before the gate
            lad.structure_ = StructureGate.from_dict(d["structure_gate"], source=str(path))
        lad.extra_ = {k: v for k, v in d.items() if k not in _KEYS}
        return lad

    def __repr__(self) -> str:
        if not hasattr(self, "t1_"):
            return f"Ladder(sink={self.sink}, unfitted)"
        m = "" if self.margin_ is None else f", margin={self.margin_:.4g}"
        return (
            f"Ladder(signal={self.signal_}, t1={self.t1_:.4g}, t2={self.t2_:.4g}{m}, members={self.n_members_}, "
            f"sink={self.sink})"
        )


def _uses(signal: str, fused: dict | None, part: str) -> bool:
    """Whether ``signal`` (with the fused record ``fused``) scores the feature signal ``part`` ("knn" or "rmd")."""
    return signal == part or (signal == "fused" and part in (fused or {}).get("parts", ()))


def _fused_record(rec: Any, path: str | Path) -> dict[str, list]:
    """A saved ``fused_`` checked: two or more distinct ``FUSED_PARTS``, one finite mean and positive std each."""
    try:
        parts, mean, std = list(rec["parts"]), [float(v) for v in rec["mean"]], [float(v) for v in rec["std"]]
    except (KeyError, TypeError, ValueError) as err:
        raise StillroomError(f"{path}: malformed fused signal record ({err!r})") from None
    ok = len(parts) >= 2 and len(set(parts)) == len(parts) and set(parts) <= set(FUSED_PARTS)
    ok = ok and len(mean) == len(std) == len(parts) and all(math.isfinite(v) for v in mean + std)
    if not ok or min(std) <= 0:
        raise StillroomError(f"{path}: malformed fused signal record {rec!r}")
    return {"parts": parts, "mean": mean, "std": std}


def _counts(decisions: list[tuple[str, str]]) -> dict[str, int]:
    """Samples per verdict, every verdict present (0 when none): the rates' numerators."""
    return {v: sum(d[0] == v for d in decisions) for v in VERDICTS}


def _rates(decisions: list[tuple[str, str]]) -> dict[str, Any]:
    n = len(decisions)
    reasons: dict[str, int] = {}
    for _, r in decisions:
        reasons[r] = reasons.get(r, 0) + 1
    rates: dict[str, Any] = {v: (c / n if n else math.nan) for v, c in _counts(decisions).items()}
    rates["reasons"] = reasons
    return rates


def _gated(dets: list[dict[str, Any]], structure_ok: np.ndarray | None) -> list[dict[str, Any]]:
    """Decisions with the structure gate applied first (it overrides the model's verdict, as in the service)."""
    if structure_ok is None:
        return dets
    ok = np.asarray(structure_ok, dtype=bool).ravel()
    if len(ok) != len(dets):
        raise StillroomError(f"ladder_report: {len(ok)} structure verdicts for {len(dets)} samples")
    return [d if k else {**d, "verdict": "reject", "reason": "no-structure"} for d, k in zip(dets, ok, strict=True)]


def ladder_report(
    ladder: Ladder,
    id_logits_list: Any,
    id_labels: np.ndarray,
    ood_logits_list: Any = None,
    id_structure_ok: np.ndarray | None = None,
    ood_structure_ok: np.ndarray | None = None,
    id_features: Any = None,
    ood_features: Any = None,
) -> dict[str, Any]:
    """Coverage, selective accuracy and OOD acceptance of a fitted ladder.

    ``id_features`` / ``ood_features``: the samples' penultimate features, needed by a knn ladder only.

    ``id_structure_ok`` / ``ood_structure_ok`` (boolean per sample, the structure gate's verdict on the served
    silhouettes): a sample outside the gate is rejected with reason "no-structure" whatever its logits, as the
    service does; None: no gate.

    Returns a dict with ``thresholds``; ``id``: ``n``, ``counts`` (samples per verdict), ``coverage`` (fraction
    accepted), ``uncertain``, ``reject``, ``selective_accuracy`` (soft-vote top-1 accuracy on accepted samples; nan
    with a warning when none is accepted), ``accuracy`` (on all samples, for reference),
    ``accuracy_accept_or_uncertain``, ``reasons`` (counts), ``coverage_correct`` and ``coverage_misread`` (the
    fraction accepted among the samples the soft vote reads right, and among those it misreads; nan where there are
    none): coverage is ``accuracy * coverage_correct + (1 - accuracy) * coverage_misread``, so on data drawn in
    another style they say whether a low coverage comes from misreading (recognition) or from doubt about what is
    read right (the operating point); and, when OOD logits are given, ``ood``: ``n``,
    ``counts``, ``acceptance`` (the number to keep low), ``uncertain``, ``rejection``, ``reasons``.
    """
    labels = np.asarray(id_labels).astype(np.int64).ravel()
    dets = _gated(ladder.decide_detailed(id_logits_list, features=id_features), id_structure_ok)
    if len(dets) != len(labels):
        raise StillroomError(f"ladder_report: {len(dets)} ID samples but {len(labels)} labels")
    verdict = np.array([d["verdict"] for d in dets])
    correct = np.array([d["pred"] for d in dets]) == labels
    acc = verdict == "accept"
    if not acc.any():
        warnings.warn("ladder_report: no ID sample accepted; selective accuracy is nan", stacklevel=2)
    kept = verdict != "reject"
    decisions = [(d["verdict"], d["reason"]) for d in dets]
    rates = _rates(decisions)
    out: dict[str, Any] = {
        "thresholds": ladder.thresholds(),
        "id": {
            "n": len(labels),
            "counts": _counts(decisions),
            "coverage": rates["accept"],
            "uncertain": rates["uncertain"],
            "reject": rates["reject"],
            "selective_accuracy": float(correct[acc].mean()) if acc.any() else math.nan,
            "accuracy": float(correct.mean()) if len(correct) else math.nan,
            "accuracy_accept_or_uncertain": float(correct[kept].mean()) if kept.any() else math.nan,
            "reasons": rates["reasons"],
            "coverage_correct": float(acc[correct].mean()) if correct.any() else math.nan,
            "coverage_misread": float(acc[~correct].mean()) if (~correct).any() else math.nan,
        },
    }
    if ood_logits_list is not None:
        ood_dets = _gated(ladder.decide_detailed(ood_logits_list, features=ood_features), ood_structure_ok)
        ood_decisions = [(d["verdict"], d["reason"]) for d in ood_dets]
        o = _rates(ood_decisions)
        out["ood"] = {
            "n": len(ood_decisions),
            "counts": _counts(ood_decisions),
            "acceptance": o["accept"],
            "uncertain": o["uncertain"],
            "rejection": o["reject"],
            "reasons": o["reasons"],
        }
    return out


LADDER_FILE = "ladder.json"
