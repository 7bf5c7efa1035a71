"""One example per command, shown as the last lines of its ``--help``.

:func:`attach` walks the finished parser and gives every (sub-)command an epilog from :data:`EXAMPLES`,
keyed by the command path after ``veml``.  A command that sets its own ``epilog`` keeps it; it must end
with a ``veml …`` line too (tests/test_everyday_cli.py walks every parser, checks that each help ends
with an example, and that the example parses).
"""

from __future__ import annotations

import argparse
from typing import Iterator

EXAMPLES: dict[str, str] = {
    "": "veml data list --json",
    "init": "veml init myrepo --metadata-url 'postgresql://veml@db.internal/veml?schema=vision'",
    "lineage": "veml lineage day+night-32 --both --format dot",
    "serve": "veml serve --host 0.0.0.0 --token-file ~/.veml-token",
    "demo": "veml demo --path veml-demo --images 100 --no-serve",
    "verify": "veml verify --deep",
    "upgrade": "veml upgrade --repo myrepo",
    "gc": "veml gc --grace 600",
    "data": "veml data import images photos/ --name photos-v1",
    "data import": "veml data import coco raw/day/annotations.json --images raw/day/images --name day",
    "data add": "veml data add day images new-photos/ --name day-v2",
    "data filter": "veml data filter day --where \"category = 'pedestrian' AND area > 30\" --name big-peds",
    "data merge": "veml data merge day night --name day+night",
    "data update": "veml data update day --coco relabelled.json --name day-relabelled",
    "data diff": "veml data diff day day+night --json",
    "data list": "veml data list --role test",
    "data show": "veml data show day --grid grid.png --plot stats.png",
    "data export": "veml data export big-peds --format coco --out exported/",
    "data prepare": "veml data prepare day+night --name day+night-32 --resize 32x32 --normalize auto",
    "data cache": "veml data cache day+night --size 224 --json",
    "data tag": "veml data tag day+night release-1",
    "model": "veml model list --backbone efficientnet_lite0",
    "model add": "veml model add --name lite0-tod --config lite0.yaml",
    "model register": "veml model register logreg.skops --name logreg-v1 --data digits",
    "model list": "veml model list --backbone efficientnet_lite0",
    "model show": "veml model show lite0-tod --json",
    "model compare": "veml model compare lite0-tod lite0-tod-wide   # or 3-20 model/training versions side by side",
    "train": "veml train --data day+night --model lite0-tod --set epochs=3 --set seed=1",
    "deploy": "veml deploy train-lite0-tod-on-day+night --format onnx --quantize int8",
    "export": "veml export onnx train-lite0-tod-on-day+night --out model.onnx",
    "export onnx": "veml export onnx train-lite0-tod-on-day+night --out model.onnx",
    "predict": "veml predict champion-onnx --data night --out night-predictions.jsonl",
    "lifecycle": "veml lifecycle list --json",
    "lifecycle list": "veml lifecycle list --json",
    "coreset": "veml coreset day --k 100",
    "similar": "veml similar night --top 5 --with-lifecycle",
    "transfer": "veml transfer night --test night-test",
    "drift": "veml drift --inference champion-onnx --test night-test",
    "rebuild": "veml rebuild --inference champion-onnx --test night-test --method adapt",
    "monitor": "veml monitor --inference champion-onnx --watch incoming/ --rebuild adapt --cooldown 3600",
    "alias": "veml alias set champion logreg-v1",
    "alias set": "veml alias set champion logreg-v1",
    "alias list": "veml alias list --json",
    "alias history": "veml alias history champion",
    "alias delete": "veml alias delete champion",
    "doctor": "veml doctor --json",
    "import": "veml import mlflow sqlite:///mlflow.db --experiment perception",
}


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(path, parser)`` for the parser and every sub-command under it, depth first (``""`` is ``veml``)."""
    stack = [("", parser)]
    while stack:
        path, p = stack.pop()
        yield path, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen: set[int] = set()
                for name, sub in action.choices.items():
                    if id(sub) not in seen:  # an alias maps to the same parser
                        seen.add(id(sub))
                        stack.append((f"{path} {name}".strip(), sub))


def attach(parser: argparse.ArgumentParser) -> None:
    """Give each command without an epilog its example from :data:`EXAMPLES` (newlines kept)."""
    for path, p in commands(parser):
        if p.epilog is None and path in EXAMPLES:
            p.epilog = f"example:\n  {EXAMPLES[path]}"
        if p.epilog is not None:
            p.formatter_class = argparse.RawDescriptionHelpFormatter


__all__ = ["EXAMPLES", "attach", "commands"]
