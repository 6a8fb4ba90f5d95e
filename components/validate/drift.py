"""How far a feature's values moved from a reference: measures that real changes cross and noise does not.

The reference is TFDV statistics (``DatasetFeatureStatisticsList``) of the data a model was trained
on; the new data is a column of raw values. Each feature gets one number, as TFDV's drift comparators
define them:

- numeric: the Jensen-Shannon divergence (base 2, 0..1) between the reference and the new values over
  the reference's own quantile buckets (TFDV's QUANTILES histogram, ten equal-mass buckets), plus a
  bucket below its minimum, one above its maximum and one for missing values. Equal-mass buckets keep
  the measure stable on heavy-tailed columns, where the equal-width histograms TFDV's built-in
  comparator uses put almost every value in one bucket and turn sampling noise into drift; the
  outer buckets make a rescaled column (x1000) a divergence near 1;
- categorical: the L-infinity distance (the largest change of one category's share), with
  categories the reference never had pooled in one "unseen" bucket and missing values in their own.

A feature drifts when its measure exceeds its bound **and** the change is statistically significant
(a chi-square test of the two count vectors, p < ``ALPHA``), so a bound never fires on the noise of a
small sample, and a tiny but significant change of a large sample stays below the bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

ALPHA = 1e-3
NUMERIC, CATEGORICAL = "jensen_shannon", "l_infinity"


@dataclass
class Drift:
    feature: str
    measure: str  # NUMERIC | CATEGORICAL
    value: float
    p_value: float
    bound: float  # 0: not gated
    rows: int  # new values compared (missing included)
    reference_rows: int
    detail: str  # what moved most, in words

    @property
    def drifted(self) -> bool:
        return self.bound > 0 and self.value > self.bound and self.p_value < ALPHA

    def as_dict(self) -> dict:
        return {**asdict(self), "drifted": self.drifted}


def stats_features(statistics) -> dict:
    """``{feature name: FeatureNameStatistics}`` of the first dataset of a statistics list."""
    dataset = statistics.datasets[0]
    return {(".".join(f.path.step) or f.name): f for f in dataset.features}


def measure(name: str, reference, values: pd.Series, num_examples: int, bound: float) -> Drift | None:
    """The drift of ``values`` from ``reference`` (a FeatureNameStatistics); None when it has no
    distribution to compare (e.g. a struct feature)."""
    if reference.HasField("num_stats"):
        return _numeric(name, reference, values, num_examples, bound)
    if reference.HasField("string_stats"):
        return _categorical(name, reference, values, num_examples, bound)
    return None


# ------------------------------------------------------------------------------------------- numeric


def _numeric(name: str, reference, values: pd.Series, num_examples: int, bound: float) -> Drift:
    stats = reference.num_stats
    edges, ref_counts = _quantile_buckets(stats)
    ref_missing = float(stats.common_stats.num_missing)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    present = numbers[~np.isnan(numbers)]
    below = present < stats.min
    above = present > (edges[-1] if len(edges) else stats.max)
    index = np.searchsorted(edges, present[~below & ~above], side="left")
    inside = np.bincount(index, minlength=len(edges)).astype(float)
    new = np.concatenate([[below.sum()], inside, [above.sum()], [len(numbers) - len(present)]])
    # past the reference's extremes: about 1 in (n + 1) of its population, so half a value's mass
    # each, not zero (zero would make one new extreme value "significant" whatever the sample size)
    ref = np.concatenate([[0.5], ref_counts, [0.5], [ref_missing]])
    value = _js(ref, new)
    labels = (
        [f"below the reference minimum {stats.min:.4g}"]
        + [f"in ({lo:.4g}, {hi:.4g}]" for lo, hi in zip(np.r_[stats.min, edges[:-1]], edges, strict=True)]
        + [f"above the reference maximum {edges[-1] if len(edges) else stats.max:.4g}", "missing"]
    )
    return Drift(
        name,
        NUMERIC,
        value,
        _p_value(ref, new),
        bound,
        len(numbers),
        int(num_examples),
        _moved(ref, new, labels),
    )


def _quantile_buckets(stats) -> tuple[np.ndarray, np.ndarray]:
    """Upper edges and counts of the reference's quantile buckets, merged where edges repeat (a value
    that fills several buckets, such as many zeros, becomes one bucket holding all of them)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    quantiles = [h for h in stats.histograms if h.type == statistics_pb2.Histogram.QUANTILES]
    if not quantiles or not quantiles[0].buckets:
        return np.array([stats.max]), np.array([float(stats.common_stats.num_non_missing)])
    edges: list[float] = []
    counts: list[float] = []
    for bucket in quantiles[0].buckets:
        if edges and bucket.high_value <= edges[-1]:
            counts[-1] += bucket.sample_count
        else:
            edges.append(bucket.high_value)
            counts.append(bucket.sample_count)
    return np.asarray(edges, dtype=float), np.asarray(counts, dtype=float)


# --------------------------------------------------------------------------------------- categorical


def _categorical(name: str, reference, values: pd.Series, num_examples: int, bound: float) -> Drift:
    stats = reference.string_stats
    ref_counts = {b.label: float(b.sample_count) for b in stats.rank_histogram.buckets}
    non_missing = float(stats.common_stats.num_non_missing)
    ref_other = max(non_missing - sum(ref_counts.values()), 0.0)  # categories past the histogram's length
    ref_missing = float(stats.common_stats.num_missing)
    present = values[values.notna()].map(lambda v: v if isinstance(v, str) else str(v))
    counts = present.value_counts()
    labels = list(ref_counts)
    new_known = np.array([float(counts.get(label, 0)) for label in labels])
    unseen = counts[~counts.index.isin(labels)]
    new = np.concatenate([new_known, [float(unseen.sum())], [float(len(values) - len(present))]])
    ref = np.concatenate([np.array(list(ref_counts.values()), dtype=float), [ref_other], [ref_missing]])
    p, q = _shares(ref), _shares(new)
    value = float(np.abs(p - q).max()) if len(p) else 0.0
    unseen_label = "values the reference did not have"
    if len(unseen):
        unseen_label += f" (e.g. {', '.join(repr(v) for v in unseen.index[:3])})"
    names = [repr(label) for label in labels] + [unseen_label, "missing"]
    return Drift(
        name,
        CATEGORICAL,
        value,
        _p_value(ref, new, np.r_[np.argsort(-ref[:-1], kind="stable"), len(ref) - 1]),  # rare ones pool
        bound,
        len(values),
        int(num_examples),
        _moved(ref, new, names),
    )


# ------------------------------------------------------------------------------------------- helpers


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else counts


def _js(ref: np.ndarray, new: np.ndarray) -> float:
    if ref.sum() <= 0 or new.sum() <= 0:
        return 0.0
    value = float(jensenshannon(ref, new, base=2) ** 2)
    return 0.0 if np.isnan(value) else value


MIN_EXPECTED = 5.0  # Cochran's rule: the chi-square test holds when every cell expects this many


def _p_value(ref: np.ndarray, new: np.ndarray, order: np.ndarray | None = None) -> float:
    """Chi-square test that the two count vectors come from one distribution.

    Neighbouring buckets (in ``order``, default as given) are pooled until every pooled bucket expects at
    least ``MIN_EXPECTED`` values in both rows, so a handful of values in a rare bucket (one value past
    the reference's maximum in a small sample) cannot make the test "significant" on its own.
    """
    if ref.sum() <= 0 or new.sum() <= 0:
        return 1.0
    if order is not None:
        ref, new = ref[order], new[order]
    total_ref, total_new = ref.sum(), new.sum()
    share_ref, share_new = total_ref / (total_ref + total_new), total_new / (total_ref + total_new)
    pooled: list[list[float]] = []
    current = [0.0, 0.0]
    for r, n in zip(ref, new, strict=True):
        current[0] += r
        current[1] += n
        total = current[0] + current[1]
        if total * share_ref >= MIN_EXPECTED and total * share_new >= MIN_EXPECTED:
            pooled.append(current)
            current = [0.0, 0.0]
    if current[0] + current[1] > 0:
        if pooled:
            pooled[-1][0] += current[0]
            pooled[-1][1] += current[1]
        else:
            pooled.append(current)
    if len(pooled) < 2:
        return 1.0
    return float(chi2_contingency(np.asarray(pooled).T, correction=False).pvalue)


def _moved(ref: np.ndarray, new: np.ndarray, labels: list[str]) -> str:
    """The bucket whose share changed most, in words: "'Dream': 36% -> 2%"."""
    p, q = _shares(ref), _shares(new)
    if not len(p):
        return ""
    i = int(np.argmax(np.abs(p - q)))
    return f"{labels[i]}: {100 * p[i]:.1f}% -> {100 * q[i]:.1f}%"
