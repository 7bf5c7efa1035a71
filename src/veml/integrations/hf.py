"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[VemlCallback(run)])`` logs the training to a VeML run.

What it logs: the ``TrainingArguments`` (sanitised, as ``Trainer`` reports them to MLflow) and the model's
config as parameters when training begins; every value ``Trainer`` logs (``loss``, ``learning_rate``,
``grad_norm``, ``eval_*`` …) at its global step; with ``log_model=True`` the trained model
(``run.log_model``) when training ends.  Pass ``report_to=[]`` to keep ``Trainer``'s other integrations
out.  Only the main process logs.
"""

from __future__ import annotations

from typing import Any

from veml.errors import MissingExtra
from veml.integrations import ActiveRun, loggable_params, numeric

try:
    from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise MissingExtra("transformers", "transformers") from exc


class VemlCallback(TrainerCallback):
    def __init__(self, run: ActiveRun, log_model: bool = False) -> None:
        self.run, self.log_model = run, log_model

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        params = dict(args.to_sanitized_dict())
        if isinstance(model, PreTrainedModel):  # its config (what a plain nn.Module trained by Trainer lacks)
            params.update({f"model.{k}": v for k, v in model.config.to_diff_dict().items()})
        self.run.log_params(loggable_params(params))

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        values = numeric(logs or {})
        if values and state.is_world_process_zero:
            self.run.log_metrics(values, step=state.global_step, epoch=int(state.epoch or 0))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.run.flush()
            if self.log_model and model is not None:
                self.run.log_model(model)


__all__ = ["VemlCallback"]
