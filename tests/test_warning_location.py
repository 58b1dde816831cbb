"""ConvergenceWarnings point at the user's line (the forward call, ``backward()``), not at internals."""

import inspect
import warnings

import torch

import lben_ode


def convergence_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, lben_ode.ConvergenceWarning)]


def test_forward_and_backward_warnings_name_the_calling_line():
    torch.manual_seed(0)
    model = lben_ode.LBEN(in_features=5, out_features=3, width=12, gamma=1.0, solver="fb", max_iter=1, tol=1e-12)
    x = torch.randn(4, 5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        forward_line = inspect.currentframe().f_lineno + 1
        logits = model(x)
        backward_line = inspect.currentframe().f_lineno + 1
        logits.sum().backward()
    found = convergence_warnings(record)
    assert [w.message.args[0].split(" solve")[0] for w in found] == ["fb forward", "fb backward"]
    assert all(w.filename == __file__ for w in found), [w.filename for w in found]
    assert [w.lineno for w in found] == [forward_line, backward_line]


def test_ode_solver_warning_names_the_calling_line():
    torch.manual_seed(0)
    model = lben_ode.LBEN(in_features=5, out_features=3, width=12, gamma=1.0, solver="ode", max_iter=2, tol=1e-12)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        model(torch.randn(4, 5))
    found = convergence_warnings(record)
    assert found and all((w.filename, w.lineno) == (__file__, line) for w in found)
