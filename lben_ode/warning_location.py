"""Where a warning of the library points: at the user's line, not at lben-ode or torch internals."""

from __future__ import annotations

import os
import sys

import torch

#: Source folders whose frames a warning skips: this package and torch (``nn.Module.__call__``,
#: the autograd engine that runs the implicit-gradient hook).
_INTERNAL = tuple(os.path.dirname(os.path.abspath(p)) + os.sep for p in (__file__, torch.__file__))


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn``, called in the function that warns, that names the user's code.

    Counts the frames from that function outwards to the first one outside lben-ode and torch,
    so a :class:`~lben_ode.errors.ConvergenceWarning` points at ``model(x)`` or ``loss.backward()``
    however deep the solve ran. Returns the outermost frame's level when every frame is internal.
    """
    frame = sys._getframe(1)  # the function about to call warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL):
        frame = frame.f_back
        level += 1
    return level
