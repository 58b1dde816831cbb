"""Whether to show lben-ode's own progress bars (evaluations that take longer than a few seconds).

Bars go to stderr, as tqdm's do. By default they are shown when stderr is a terminal; an explicit
choice (``--progress`` / ``--no-progress``) or the environment variable ``LBEN_ODE_PROGRESS``
(``1`` on, ``0`` off) overrides that, e.g. to watch a long run whose output goes to a log file.
"""

from __future__ import annotations

import os
import sys

#: Environment variable that forces the progress bars on (``1``) or off (``0``).
PROGRESS_ENV = "LBEN_ODE_PROGRESS"


def progress_wanted(explicit: bool | None = None) -> bool:
    """``explicit`` when given, else ``LBEN_ODE_PROGRESS`` when set, else whether stderr is a terminal."""
    if explicit is not None:
        return explicit
    setting = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    return sys.stderr is not None and sys.stderr.isatty()
