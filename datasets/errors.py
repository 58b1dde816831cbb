"""The error raised for missing, unreadable or corrupt data."""

from __future__ import annotations

from lben_ode.errors import LBENError


class DatasetError(LBENError):
    """A data set cannot be found, read, downloaded or parsed; the message names the file and the fix."""
