"""torchmetrics for sequence models: RMSE, NRMSE and fit per output, and the cost of each simulation.

Definitions, per output channel j over every scored sample k of an epoch (raw units):

- ``rmse_j = sqrt(mean_k (ŷ_kj − y_kj)²)``
- ``nrmse_j = 100 · rmse_j / std_k(y_kj)`` (%, population standard deviation; 0 is perfect, 100 is
  as good as predicting the mean)
- ``fit_j = 100 · (1 − ‖ŷ_j − y_j‖ / ‖y_j − mean(y_j)‖) = 100 − nrmse_j`` (%; the "best fit" of
  system identification toolboxes)
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from .metrics import mean_metric


class OutputFit(Metric):
    """Sums per output channel (float64, summed across processes) from which RMSE, NRMSE and fit follow.

    Args:
        outputs: number of output channels p.
    """

    full_state_update = False

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs
        for name in ("squared_error", "target_sum", "target_squares"):
            self.add_state(name, default=torch.zeros(outputs, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add scored samples ``(N, p)`` of prediction and target (raw units)."""
        prediction, target = prediction.detach().double(), target.detach().double()
        self.squared_error += (prediction - target).pow(2).sum(0)
        self.target_sum += target.sum(0)
        self.target_squares += target.pow(2).sum(0)
        self.count += target.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        """``rmse``, ``nrmse`` (%) and ``fit`` (%), each ``(p,)``."""
        n = self.count
        rmse = (self.squared_error / n).sqrt()
        mean = self.target_sum / n
        variance = (self.target_squares / n - mean.pow(2)).clamp_min(0.0)  # population variance
        nrmse = 100.0 * rmse / variance.sqrt()
        return {"rmse": rmse, "nrmse": nrmse, "fit": 100.0 - nrmse}


class SimulationMetrics(torch.nn.Module):
    """Means per batch of a simulation's function evaluations, accepted steps and wall time (s)."""

    NAMES = ("function_evaluations", "backward_function_evaluations", "accepted_steps", "rejected_steps", "time_s")

    def __init__(self) -> None:
        super().__init__()
        self.values = torch.nn.ModuleDict({name: mean_metric() for name in self.NAMES})

    def update(self, summary: dict[str, float]) -> dict[str, mean_metric]:
        """Add one simulation's ``SimulationStats.summary()``; returns the metrics to log by name."""
        out = {}
        for name, metric in self.values.items():
            if name in summary:
                metric.update(torch.tensor(float(summary[name]), dtype=torch.float32))
                out[name] = metric
        return out
