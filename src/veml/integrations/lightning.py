"""PyTorch Lightning: ``Trainer(callbacks=[VemlCallback(run)])`` logs the fit to a VeML run.

What it logs: the module's hyper-parameters (``save_hyperparameters()``) as parameters when the fit starts;
every metric the module logs (``self.log``) at the trainer's global step, every ``log_every_n_steps``
training batches and at the end of each training and validation epoch; with ``log_model=True`` the
trained module (``run.log_model``) when the fit ends.  Only the global-zero process logs.
"""

from __future__ import annotations

from typing import Any

from veml.errors import MissingExtra
from veml.integrations import ActiveRun, loggable_params, numeric

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise MissingExtra("lightning", "lightning") from exc


class VemlCallback(pl.Callback):
    def __init__(self, run: ActiveRun, log_model: bool = False) -> None:
        super().__init__()
        self.run, self.log_model = run, log_model

    def _log(self, trainer: pl.Trainer) -> None:
        values = {k: v for k, v in numeric(trainer.callback_metrics).items()}
        if values and trainer.is_global_zero:
            self.run.log_metrics(values, step=trainer.global_step, epoch=trainer.current_epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and pl_module.hparams:
            self.run.log_params(loggable_params(dict(pl_module.hparams)))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0:
            self._log(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.run.flush()
            if self.log_model:
                self.run.log_model(pl_module)


__all__ = ["VemlCallback"]
