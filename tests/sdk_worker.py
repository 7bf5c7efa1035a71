"""A training script run as its own process by ``test_sdk.py``: the SDK as a user's script uses it.

Usage: ``python sdk_worker.py ROOT MODE NAME``

``MODE finish``: a run logged to the end (with a ``with`` block), then exit.  ``MODE hang``: a run that logs
three steps, writes them out, prints ``ready`` and sleeps until it is killed (the test sends SIGKILL).
``MODE forget``: a run never ended (no ``with``, no ``end()``): the interpreter's exit ends it.
"""

from __future__ import annotations

import sys
import time

import veml

root, mode, name = sys.argv[1:4]
if mode == "finish":
    with veml.start_run(name=name, repo=root, params={"lr": 0.1}, system_metrics_s=0) as run:
        for step in range(3):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
elif mode == "hang":
    run = veml.start_run(name=name, repo=root, params={"lr": 0.1}, system_metrics_s=0)
    for step in range(3):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    run.set_tag("stage", "before-kill")  # written at once, as an event
    run.flush()  # the metrics are buffered: write them now
    print("ready", flush=True)
    time.sleep(600)
elif mode == "forget":
    run = veml.start_run(name=name, repo=root, system_metrics_s=0)
    run.log_metric("loss", 0.5)
    if len(sys.argv) > 4:
        raise RuntimeError("crashed outside any with block")
