"""Errors that the CLI reports as one clear line instead of a traceback."""


class MetarunError(Exception):
    """Base class: a problem the user can fix (bad config, missing data)."""


class ConfigError(MetarunError):
    """A config key holds a value that metarun cannot run with."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class DataError(MetarunError):
    """A data set is missing, incomplete or corrupt. Never answered with made-up data."""


class DivergedError(MetarunError):
    """Training produced a non-finite loss or parameter: a run that diverged has no result."""
