"""When a per-step value (``self.log(..., on_step=True)``) is read by anyone, so it is logged only then.

Lightning writes step values to its loggers every ``log_every_n_steps`` optimizer steps and shows
them in a progress bar when the bar refreshes (``refresh_rate`` batches); a value logged on any
other step is overwritten before anything reads it. Each ``self.log`` call costs Lightning about a
millisecond on a CPU (its result collection moves and checks the value), a tenth of a small LBEN's
whole training step, so a module that logs its loss every step spends a tenth of the epoch on
values nobody sees. :func:`step_value_read` tells a ``training_step`` whether this step's value
will be read.

What changes for a user: ``trainer.callback_metrics["train/loss_step"]`` holds the value of the
last step that was logged, not of the last step (a callback that monitors a per-step value should
monitor the epoch's ``train/loss`` or set ``log_every_n_steps=1``). Logger rows and the progress
bar show the same values as with logging at every step.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule


def step_value_read(module: LightningModule, batch_idx: int) -> bool:
    """Whether a value that ``module`` logs with ``on_step=True`` at training batch ``batch_idx``
    is read: by a logger (Lightning's own decision for this step, made before the step like here),
    by a progress bar that refreshes after this batch, or in a ``fast_dev_run``. True when the
    module is not attached to a trainer, or a progress bar does not say its refresh rate.
    """
    trainer = module._trainer
    if trainer is None or trainer.fast_dev_run:
        return True
    if trainer.loggers:
        # Lightning's logger connector decides before the step whether the step's values are
        # written (its `should_update_logs` counts the step about to run); without that private
        # property, log every step as Lightning's own modules do.
        connector = getattr(trainer, "_logger_connector", None)
        decision = getattr(connector, "should_update_logs", True)
        if decision:
            return True
    bar = trainer.progress_bar_callback
    if bar is None or not bar.is_enabled:
        return False
    rate = getattr(bar, "refresh_rate", None)
    if not isinstance(rate, int) or rate <= 1:
        return True
    done = batch_idx + 1
    total = trainer.num_training_batches
    # Lightning's bars refresh after batches whose count is a multiple of the rate, and after the last.
    return done % rate == 0 or (isinstance(total, int) and done == total)
