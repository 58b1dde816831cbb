"""adam: fused where torch can, the same updates as torch's default Adam, the default otherwise."""

import pytest
import torch
from lben_ode.lightning_modules.optimizers import adam


def test_fused_adam_takes_the_default_adams_steps():
    """Five steps on the same gradients: fused and default Adam agree to float32 rounding."""
    torch.manual_seed(0)
    start = [torch.randn(80, 784), torch.randn(80), torch.randn(10, 80)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    runs = {}
    for name, make in {"ours": lambda ps: adam(ps, 1e-2, (0.9, 0.99)),
                       "default": lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.99))}.items():
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = make(params)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            optimizer.step()
        runs[name] = (optimizer, params)
    assert runs["ours"][0].defaults["fused"] is True
    for ours, default, initial in zip(runs["ours"][1], runs["default"][1], start, strict=True):
        torch.testing.assert_close(ours, default, rtol=1e-5, atol=1e-6)
        assert (ours - initial).abs().mean() > 5e-3  # the steps (about lr = 1e-2 each) moved the parameters


def test_complex_parameters_get_the_default_adam():
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    optimizer = adam([p], 1e-3, (0.9, 0.999))
    assert not optimizer.defaults["fused"]
    p.grad = torch.ones_like(p)
    optimizer.step()  # fused Adam would refuse complex tensors here


def test_no_parameters_is_torchs_error():
    with pytest.raises(ValueError, match="empty parameter list"):
        adam([], 1e-3, (0.9, 0.999))
