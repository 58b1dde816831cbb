"""torchmetrics collections for equilibrium classifiers: loss and accuracy, solver convergence, certificates.

Every value is accumulated in a torchmetrics object, so Lightning computes it once per epoch and
torchmetrics sums (or takes the maximum) over every process: a metric is the same whether an
epoch ran on one device or many. Per-sample quantities are weighted per sample, not per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric

from lben_ode.robustness import certified_correct, certified_radius
from lben_ode.solvers import SolverStats


def mean_metric() -> MeanMetric:
    """A weighted mean; NaN is kept (a NaN loss or residual must show, not be dropped)."""
    # nan_strategy="disable" also avoids a host synchronisation per update.
    return MeanMetric(nan_strategy="disable")


class ClassificationMetrics(nn.Module):
    """Mean cross-entropy and accuracy over every sample of an epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = mean_metric()
        self.acc = mean_metric()

    def update(self, per_sample_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Metric]:
        """Add a batch; returns the metrics to log under their names."""
        self.loss.update(per_sample_loss.detach())
        self.acc.update((logits.detach().argmax(dim=1) == labels).float())
        return {"loss": self.loss, "acc": self.acc}


class SolverMetrics(Metric):
    """Convergence of the equilibrium solves of an epoch (forward or backward), in one metric.

    :meth:`compute` gives, under the names of :meth:`lben_ode.solvers.SolverStats.summary`:
    ``iterations_mean`` (per sample), ``iterations_max``, ``residual_max`` (relative fixed-point
    residual), ``converged_fraction`` (per sample), ``time_s`` (mean wall time of one batch's solve)
    and, when the solver counts them, ``function_evaluations`` (mean per solve that counted them).

    One metric with sum and max states rather than one torchmetrics object per value: an update
    is a dozen tensor operations on the device (no host sync), where six separate metrics cost
    about a third of a millisecond per solve on a CPU, as much as a small model's solve. States
    are reduced over processes like any torchmetrics state (sums add, maxima take the maximum, NaN
    kept), so the values are the same on one device or many.
    """

    full_state_update = False

    _SUMS = ("iterations_sum", "samples", "converged_sum", "time_sum", "solves", "evaluations_sum", "counted")
    _MAXIMA = ("iterations_max", "residual_max")

    def __init__(self) -> None:
        super().__init__()
        # The default dtype, as torchmetrics' own metrics: float64 does not exist on every device.
        dtype = torch.get_default_dtype()
        for name in self._SUMS:
            self.add_state(name, torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        for name in self._MAXIMA:
            self.add_state(name, torch.full((), -torch.inf, dtype=dtype), dist_reduce_fx="max")

    def update(self, stats: SolverStats) -> None:  # type: ignore[override]
        """Add one solve's statistics."""
        iterations = stats.iterations.to(self.iterations_sum.dtype)
        self.iterations_sum += iterations.sum()
        self.samples += iterations.numel()
        # torch.maximum keeps NaN: a NaN residual must show, not be dropped.
        self.iterations_max = torch.maximum(self.iterations_max, iterations.max())
        self.residual_max = torch.maximum(self.residual_max, stats.residual.to(self.residual_max.dtype).max())
        self.converged_sum += stats.converged.sum()
        self.time_sum += stats.time_s
        self.solves += 1
        if stats.function_evaluations is not None:
            self.evaluations_sum += stats.function_evaluations
            self.counted += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """The epoch's values (see the class docstring); ``function_evaluations`` only when counted."""
        values = {
            "iterations_mean": self.iterations_sum / self.samples,
            "iterations_max": self.iterations_max,
            "residual_max": self.residual_max,
            "converged_fraction": self.converged_sum / self.samples,
            "time_s": self.time_sum / self.solves,
        }
        if bool(self.counted > 0):
            values["function_evaluations"] = self.evaluations_sum / self.counted
        return values


def eps_name(eps: float) -> str:
    """How a radius ε appears in a metric name, e.g. ``1.5`` → ``"1.5"``, ``2.0`` → ``"2"``."""
    return f"{eps:g}"


class CertificationMetrics(nn.Module):
    """Certified accuracy at each ε and the mean certified radius, in raw (e.g. pixel) units.

    A sample counts as certified at ε when its forward solve converged, it is classified correctly
    and its certified radius ``margin / (√2 γ)`` (converted to raw units with the normalisation's
    ``raw_scale``) exceeds ε. ``radius_mean`` averages the certified radius with 0 for
    misclassified or unconverged samples (the usual "average certified radius");
    ``converged_fraction`` is the fraction of samples whose solve converged, logged beside them.

    Args:
        eps: radii ε in raw units.
    """

    def __init__(self, eps: Sequence[float]) -> None:
        super().__init__()
        self.eps = [float(e) for e in eps]
        self.accuracy = nn.ModuleList(mean_metric() for _ in self.eps)
        self.radius_mean = mean_metric()
        self.converged_fraction = mean_metric()

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        gamma: float,
        input_scale: float,
        converged: torch.Tensor | None = None,
    ) -> dict[str, Metric]:
        """Add a batch for a model with Lipschitz bound ``gamma`` (model units); returns metrics by name.

        ``converged`` is the ``(batch,)`` bool mask of forward solves that converged (None: all did,
        the logits are exact); samples that did not are never certified.
        """
        logits = logits.detach()
        if converged is None:
            converged = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
        out: dict[str, Metric] = {}
        if self.eps:
            certified = certified_correct(logits, labels, gamma, self.eps, input_scale, converged).float()
            for k, (eps, metric) in enumerate(zip(self.eps, self.accuracy, strict=True)):
                metric.update(certified[:, k])
                out[f"acc_raw_eps{eps_name(eps)}"] = metric
        radius = certified_radius(logits, gamma, input_scale)
        counted = (logits.argmax(dim=1) == labels) & converged
        self.radius_mean.update(torch.where(counted, radius, torch.zeros_like(radius)))
        out["radius_raw_mean"] = self.radius_mean
        self.converged_fraction.update(converged.float())
        out["converged_fraction"] = self.converged_fraction
        return out


class AttackMetrics(nn.Module):
    """Accuracy under an ℓ2 PGD attack at each ε (raw units): an upper bound on robust accuracy.

    A sample whose solves (clean or attacked) did not all converge never counts as robust;
    ``converged_fraction`` (the smallest over ε) is logged beside the accuracies.

    Args:
        eps: radii ε in raw units.
    """

    def __init__(self, eps: Sequence[float]) -> None:
        super().__init__()
        self.eps = [float(e) for e in eps]
        self.accuracy = nn.ModuleList(mean_metric() for _ in self.eps)
        self.converged_fraction = mean_metric()

    def update(
        self, accuracy: torch.Tensor, batch_size: int, converged_fraction: torch.Tensor | None = None
    ) -> dict[str, Metric]:
        """Add one batch's attack accuracy and converged fraction per ε, weighted by its size; returns metrics."""
        out: dict[str, Metric] = {}
        for value, eps, metric in zip(accuracy.tolist(), self.eps, self.accuracy, strict=True):
            # One entry per sample rather than a weight: torchmetrics ignores weights when
            # nan_strategy="disable".
            metric.update(torch.full((batch_size,), value, device=metric.device))
            out[f"acc_raw_eps{eps_name(eps)}"] = metric
        if converged_fraction is not None and converged_fraction.numel():
            fraction = float(converged_fraction.min())
            self.converged_fraction.update(torch.full((batch_size,), fraction, device=self.converged_fraction.device))
            out["converged_fraction"] = self.converged_fraction
        return out
