"""What the drift analysis is tuned with; built from :class:`Settings` plus fixed method choices."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import chi2, norm

from service.settings import Settings

# Evidently's stattest names. Wasserstein distance normed by the reference's standard deviation is
# an effect size ("how many standard deviations did the distribution move"), so it does not turn
# every large window into a p-value alarm the way KS does (see "Drift monitoring" in README.md).
DEFAULT_METHOD = "wasserstein"
# For categorical features: the Jensen-Shannon distance of the category shares, again an effect
# size (0: the same mix, 1: no category in common) rather than a p-value.
CATEGORICAL_METHOD = "jensenshannon"


@dataclass(frozen=True, slots=True)
class DriftConfig:
    min_rows: int = 100
    max_rows: int = 50_000
    min_labelled_rows: int = 50
    performance_tolerance: float = 0.05
    method: str = DEFAULT_METHOD
    threshold_floor: float = 0.1
    """Evidently's default wasserstein threshold: the smallest shift (in reference SDs) flagged."""
    noise_factor: float = 4.0
    """Threshold is raised to noise_factor · sqrt(1/n + 1/m) so small windows are not flagged
    for sampling noise alone (n current rows, m reference rows)."""
    cat_method: str = CATEGORICAL_METHOD
    cat_threshold_floor: float = 0.1
    """Evidently's default Jensen-Shannon threshold: the smallest change of the mix flagged."""
    regression_tolerance: float = 0.2
    """Relative rise of a regressor's MAE or RMSE over the validation rows' that flags model
    drift (0.2: errors 20 % larger)."""
    drift_share: float = 0.5
    """Evidently's dataset-drift rule: drifted features / features ≥ drift_share."""
    rule: str = "importance"
    """``importance``: Σ importance of the drifted features ≥ importance_threshold (falls back to
    ``share`` when the manifest has no importance); ``share``: Evidently's rule above."""
    importance_threshold: float = 0.1
    """Chosen by experiment on the demo (README, "Drift monitoring"): its most important feature
    carries 0.135 of the importance, so a shift of it alone flags; clean windows score 0."""
    segment_by: str | None = None
    """Metadata key or categorical feature to analyse each value of separately."""
    segment_min_rows: int = 100
    """Segments with fewer rows are reported as insufficient_data."""
    estimate_draws: int = 200
    """Label draws behind the 95 % band of the CBPE estimate."""
    seed: int = 0
    """Seed of the sampling of windows larger than max_rows, so a rerun reproduces a report."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DriftConfig:
        base = cls(
            min_rows=settings.drift_min_rows,
            max_rows=settings.drift_max_rows,
            min_labelled_rows=settings.drift_min_labelled_rows,
            performance_tolerance=settings.drift_performance_tolerance,
            regression_tolerance=settings.drift_regression_tolerance,
            rule=settings.drift_rule.value,
            importance_threshold=settings.drift_importance_threshold,
            segment_by=settings.drift_segment_by or None,
            segment_min_rows=settings.drift_segment_min_rows,
        )
        return cls(**{**asdict(base), **overrides})

    def threshold(self, current_rows: int, reference_rows: int) -> float:
        """Drift threshold for a window of ``current_rows`` against ``reference_rows``."""
        noise = self.noise_factor * math.sqrt(1 / max(current_rows, 1) + 1 / max(reference_rows, 1))
        return max(self.threshold_floor, noise)

    def categorical_threshold(
        self, current_rows: int, reference_rows: int, categories: int
    ) -> float:
        """Jensen-Shannon threshold for a feature with ``categories`` distinct values: the floor,
        raised where sampling noise alone could reach it. Between two samples of one mix the
        squared distance is about chi²(k-1)/8 · (1/n + 1/m); the allowance is its quantile at
        the tail probability of ``noise_factor`` standard deviations, the numeric rule's."""
        df = max(categories - 1, 1)
        tail = 2 * float(norm.sf(self.noise_factor))
        scale = 1 / max(current_rows, 1) + 1 / max(reference_rows, 1)
        noise = math.sqrt(float(chi2.isf(tail, df)) / 8 * scale)
        return max(self.cat_threshold_floor, noise)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
