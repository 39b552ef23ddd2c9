"""Errors shared by the MSKD trainer and its teachers (kept apart so neither imports the other)."""
from __future__ import annotations

from snncc.training.config import ConfigError


class MSKDError(ValueError):
    """Base class of MSKD errors (one-line messages)."""


class TeacherError(MSKDError):
    """The teacher cannot be used (wrong class count, unreadable file, wrong data)."""


class TeacherNotFoundError(TeacherError, FileNotFoundError):
    """The teacher file or directory does not exist."""


class MSKDConfigError(MSKDError, ConfigError):
    """An invalid MSKD configuration value."""
