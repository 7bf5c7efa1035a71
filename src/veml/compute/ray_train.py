"""Data-parallel training through Ray Train: ``TorchTrainer`` around the torch adapter's worker loop.

Why Ray Train and not a hand-made process group: it starts the workers where the cluster has
room, sets up ``torch.distributed`` (gloo on CPUs), and its ``prepare_model`` /
``prepare_data_loader`` are the DistributedDataParallel wrapper and DistributedSampler Ray users
already know.  What stays VeML's: the loop itself (:meth:`TorchAdapter.train_worker`, the same
steps as the local loop) and what is recorded — the training data crosses once through the
object store, rank 0 streams its step log through a Ray queue to the driver (which writes it
into the training version's log as the run goes, so ``veml train log T --follow`` works as for
a local run) and sends back the checkpoint bytes as the run's return value, which the caller
stores exactly as it stores a local run's.  So no shared file system is needed for checkpoints,
and ``veml deploy`` treats the result like any other training.
"""

from __future__ import annotations

import queue as queue_mod
import shutil
import tempfile
import threading
import uuid
from typing import Any, Mapping

from veml.adapters.base import LogFn, ModelSpec, TaskData, TrainOutcome, TrainsDataParallel
from veml.compute.executor import ComputeError, RayExecutor, import_ray
from veml.errors import InvalidInput, MissingExtra, VemlError

#: ``veml train --set distributed=ray --set workers=N`` (read by the training module, not the adapter)
BACKENDS = ("none", "ray")
DEFAULT_WORKERS = 2


def require_ray_train() -> tuple[Any, Any, Any, Any]:
    import_ray()
    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as exc:  # ray without its [train] dependencies
        raise MissingExtra("ray[train]", "ray") from exc
    return TorchTrainer, ScalingConfig, RunConfig, TorchConfig


def prepare(executor: RayExecutor, workers: int) -> None:
    """Refuse a run that cannot start, before the caller records it: no Ray (Train), no cluster, too few CPUs.

    Ray Train would otherwise wait, silently and for ever, for CPUs a fixed-size cluster will never have."""
    require_ray_train()
    executor.connect()
    cpus = float(import_ray().cluster_resources().get("CPU", 0.0))
    if workers > cpus:
        raise InvalidInput(f"workers={workers} needs {workers} CPUs but the Ray cluster has {cpus:g}")


def _worker_loop(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """What each Ray Train worker runs; rank 0 returns the checkpoint and its log to the driver."""
    import ray
    import ray.train
    import ray.train.torch

    from veml.adapters import get_adapter

    adapter = get_adapter(config["adapter"])
    data: TaskData = ray.get(config["data"])
    rank = ray.train.get_context().get_world_rank()
    log_queue = config["log"]

    def log(step: int, epoch: int, values: Mapping[str, float]) -> None:
        if rank == 0:  # every worker knows the averaged loss; one of them tells the driver
            log_queue.put((step, epoch, dict(values)))

    def epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        ray.train.report({**metrics, "epoch": epoch})

    outcome = adapter.train_worker(
        config["spec"], data, config["params"], config["init"], log,
        wrap_model=ray.train.torch.prepare_model,
        wrap_loader=lambda loader: ray.train.torch.prepare_data_loader(loader, move_to_device=False),
        epoch_end=epoch_end, rank=rank)
    if rank != 0:
        return None
    return {"checkpoint": outcome.checkpoint, "metrics": dict(outcome.metrics), "profile": dict(outcome.profile)}


def _failure(exc: BaseException) -> BaseException:
    """The worker's own error when it is one of ours (bad data found on a worker), else a ComputeError."""
    causes = list(getattr(exc, "worker_failures", {}).values())
    if getattr(exc, "controller_failure", None) is not None:
        causes.append(exc.controller_failure)
    for cause in causes:
        inner = getattr(cause, "cause", cause)  # a RayTaskError wraps the exception the worker raised
        if isinstance(inner, VemlError):
            return inner
    first = causes[0] if causes else exc
    text = str(getattr(first, "cause", first)).strip().splitlines()
    return ComputeError(f"Ray Train run failed: {type(getattr(first, 'cause', first)).__name__}: {text[-1] if text else ''}")


def fit(adapter: Any, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn,
        workers: int = DEFAULT_WORKERS) -> TrainOutcome:
    """Train with ``workers`` data-parallel CPU workers; ``log`` gets rank 0's steps (losses averaged over workers).

    The caller has connected to Ray already (so a wrong address fails before anything is
    recorded).  ``trainer.fit()`` runs in a helper thread while this one writes the log rows as
    they arrive (``log`` is the caller's, and its store is used from the caller's thread only);
    Ray's own per-epoch reports are in the Ray dashboard.
    """
    if not isinstance(adapter, TrainsDataParallel):
        raise ComputeError(f"the {adapter.name} adapter has no data-parallel training loop")
    TorchTrainer, ScalingConfig, RunConfig, TorchConfig = require_ray_train()
    ray = import_ray()
    from ray.util.queue import Queue

    storage = tempfile.mkdtemp(prefix="veml-ray-train-")  # Ray Train's run state; checkpoints travel as bytes
    log_queue = Queue(actor_options={"num_cpus": 0})  # no CPU taken from the workers
    try:
        config = {"adapter": adapter.name, "spec": spec, "params": dict(params), "init": init, "data": ray.put(data),
                  "log": log_queue}
        trainer = TorchTrainer(
            _worker_loop, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=int(workers), use_gpu=False),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(name=f"veml-{uuid.uuid4().hex[:12]}", storage_path=storage))
        box: dict[str, Any] = {}

        def run() -> None:
            # a helper thread also keeps Ray Train from installing its own SIGINT handler in this process
            try:
                box["result"] = trainer.fit()
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        runner = threading.Thread(target=run, name="veml-ray-train", daemon=True)
        runner.start()
        while runner.is_alive():
            try:
                log(*log_queue.get(timeout=0.5))
            except queue_mod.Empty:
                continue
        runner.join()
        for row in log_queue.get_nowait_batch(log_queue.qsize()):
            log(*row)
        if "error" in box:
            exc = box["error"]
            raise exc if isinstance(exc, VemlError) else _failure(exc) from None
        result = box["result"]
        if getattr(result, "error", None) is not None:
            raise _failure(result.error)
        out = getattr(result, "return_value", None)
        if not out:
            raise ComputeError("Ray Train finished without rank 0's checkpoint (is Ray Train V2 enabled?)")
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        log_queue.shutdown()
    profile = {**out["profile"], "workers": int(workers), "backend": "ray"}
    return TrainOutcome(out["checkpoint"], out["metrics"], profile)
