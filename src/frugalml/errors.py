"""Errors meant for users: one line, actionable. The CLI prints them without a traceback, exit 2."""

from __future__ import annotations


class FrugalError(Exception):
    """Base class of every error a user can fix (bad recipe, bad data, bad checkpoint)."""

    exit_code = 2


class ConfigError(FrugalError):
    """A recipe, --set override or config object is invalid."""


class DataError(FrugalError):
    """A dataset is missing, corrupt or inconsistent."""


class ArtifactError(FrugalError):
    """A saved model or checkpoint is missing or corrupt."""


class UnsupportedError(FrugalError):
    """The requested technique/backend cannot handle this model or machine."""


class OutputError(FrugalError):
    """An output cannot be written (read-only location, full disk, a file where a folder should be)."""
