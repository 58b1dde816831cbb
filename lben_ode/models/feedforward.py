"""Feed-forward networks as equilibrium networks with a strictly block-lower-triangular W."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..activations import Activation, get_activation
from ..errors import ActivationError, ConfigurationError
from ..solvers.base import Solver
from .dense import DenseEquilibriumModel


class FeedforwardEquilibrium(DenseEquilibriumModel):
    """An MLP written as ``z = σ(W z + U x + b_z)`` with W strictly block-lower-triangular.

    Hidden layer k is block k of z; W holds layer k+1's weight in block (k+1, k), U holds the first
    layer's weight, and W_o reads the last block. W is nilpotent, so the equilibrium is unique and
    equals the MLP's forward pass; there is no certified Lipschitz bound.

    Build one with :func:`from_mlp`.
    """

    def __init__(
        self,
        hidden: list[tuple[torch.Tensor, torch.Tensor]],
        output: tuple[torch.Tensor, torch.Tensor] | None,
        activation: Activation,
        solver: str | Solver = "pr",
        **solver_options: Any,
    ) -> None:
        sizes = [w.shape[0] for w, _ in hidden]
        width, in_features = sum(sizes), hidden[0][0].shape[1]
        out_features = sizes[-1] if output is None else output[0].shape[0]
        super().__init__(in_features, out_features, width, activation, solver, solver_options)
        # Take the MLP's dtype and device before copying, so float64 weights are not rounded.
        self.to(dtype=hidden[0][0].dtype, device=hidden[0][0].device)
        self.block_sizes = sizes
        self.blocks = nn.ParameterList([nn.Parameter(w.detach().clone()) for w, _ in hidden[1:]])
        with torch.no_grad():
            self.U.zero_()
            self.U[: sizes[0]] = hidden[0][0]
            self.b_z.copy_(torch.cat([b for _, b in hidden]))
            self.W_o.zero_()
            if output is None:
                self.W_o[:, width - sizes[-1]:] = torch.eye(sizes[-1])
                self.b_y.zero_()
            else:
                self.W_o[:, width - sizes[-1]:] = output[0]
                self.b_y.copy_(output[1])

    def weight_matrix(self) -> tuple[torch.Tensor, None]:
        offsets = [0]
        for s in self.block_sizes:
            offsets.append(offsets[-1] + s)
        rows = []
        for k, size in enumerate(self.block_sizes):
            parts = []
            if k > 0:
                parts.append(self.U.new_zeros(size, offsets[k - 1]))
                parts.append(self.blocks[k - 1])
            parts.append(self.U.new_zeros(size, self.width - offsets[k]))
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0), None

    def lipschitz_bound(self) -> None:
        return None


def from_mlp(mlp: nn.Sequential, solver: str = "pr", **solver_options: Any) -> FeedforwardEquilibrium:
    """Build the equilibrium network that reproduces an MLP exactly.

    Args:
        mlp: ``nn.Sequential`` of ``Linear, act, Linear, act, …`` optionally ending in a ``Linear``
            (the output layer); every activation must be the same monotone activation with slope
            in [0, 1] (ReLU, LeakyReLU, Tanh, Sigmoid, Softplus).
        solver: registry name of the equilibrium solver.
        **solver_options: options of that solver.

    Raises:
        ConfigurationError: if the layers do not alternate as above.
        ActivationError: for an unsupported or mixed activation.
    """
    if not isinstance(mlp, nn.Sequential) or len(mlp) == 0:
        raise ConfigurationError(f"from_mlp expects a non-empty nn.Sequential, got {type(mlp).__name__}")
    layers = list(mlp)
    hidden: list[tuple[torch.Tensor, torch.Tensor]] = []
    activation: Activation | None = None
    i = 0
    while i < len(layers):
        layer = layers[i]
        if not isinstance(layer, nn.Linear):
            raise ConfigurationError(
                f"from_mlp: layer {i} is {type(layer).__name__}; expected Linear layers each followed "
                "by an activation, with an optional final Linear"
            )
        weight = layer.weight.detach()
        bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(weight.shape[0])
        if hidden and weight.shape[1] != hidden[-1][0].shape[0]:
            raise ConfigurationError(
                f"from_mlp: layer {i} (Linear) takes {weight.shape[1]} features but the previous "
                f"Linear gives {hidden[-1][0].shape[0]}"
            )
        if i == len(layers) - 1:
            if not hidden:
                raise ConfigurationError("from_mlp needs at least one hidden Linear + activation")
            return FeedforwardEquilibrium(hidden, (weight, bias), activation, solver, **solver_options)
        act = get_activation(layers[i + 1]) if isinstance(layers[i + 1], nn.Module) else None
        if activation is not None and repr(act) != repr(activation):
            raise ActivationError(
                f"from_mlp needs one activation throughout, got {activation!r} and {act!r}"
            )
        activation = act
        hidden.append((weight, bias))
        i += 2
    return FeedforwardEquilibrium(hidden, None, activation, solver, **solver_options)
