"""Errors a user can act on. Every stage raises these for bad input, never a bare traceback."""


class KfpTabularError(Exception):
    """Base class: the message names what is wrong and, where possible, how to fix it."""


class InputDataError(KfpTabularError):
    """The input table is missing, unreadable, empty, or not what the configuration says."""


class DataValidationError(KfpTabularError):
    """TFDV found anomalies (schema violations, skew or drift) in a split."""

    def __init__(self, message: str, anomalies: list[dict] | None = None):
        super().__init__(message)
        self.anomalies = anomalies or []


class ConfigError(KfpTabularError):
    """A configuration value is invalid or inconsistent with the data."""


class ModelArtifactError(KfpTabularError):
    """A model artifact is missing, incomplete, or fails its integrity check."""
