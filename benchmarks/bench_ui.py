#!/usr/bin/env python
"""The web UI's data grid on a 100,000-sample version (issue 17): first paint and a filter, in Chromium.

A table version of ``--samples`` rows (features a, b, c and a label y, generated) is imported
into a fresh repository (a table, not images: importing 100,000 images takes minutes, and the
grid's server-side work, choosing a page by DuckDB over the metadata, is the same); the server
runs on a free loopback port (uvicorn in a thread, as the tests run it); the system Chromium
(``/usr/bin/chromium`` or $VEML_CHROMIUM, headless) driven by Playwright then times, ``--repeats``
times each:

* first paint: ``goto #/data/<id>`` until the grid's first page is drawn (the statistics, computed
  over the whole version, load first: they are part of what the user waits for);
* filter: typing a ``--where`` expression and Enter, until the filtered page is drawn;
* sort, then filter: choosing a sort column (one load), then the filter (ORDER BY over the matches);
* next page: the "next" button on the filtered, sorted grid;

and, with httpx, the API calls alone (GET /data/<id>/samples with and without where/sort).
Reported: p50 and max per step (ms), with the load average.  Loopback, warm cache after the first
load.

    .venv/bin/python benchmarks/bench_ui.py                  # 100,000 rows, 7 repeats
    .venv/bin/python benchmarks/bench_ui.py --samples 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine_info, machine_line, median  # noqa: E402

import veml  # noqa: E402
from live_server import LiveServer  # noqa: E402

CHROMIUM = os.environ.get("VEML_CHROMIUM", "/usr/bin/chromium")
WHERE = "a > 1 AND category = 'p'"
READY = "() => { const m = document.getElementById('main'); const g = document.getElementById('samples');" \
        " return m && m.dataset.state === 'ready' && g && g.dataset.state === 'ready'; }"


def build(base: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    csv = base / "table.csv"
    with csv.open("w") as f:
        f.write("a,b,c,y\n")
        for r in x:
            f.write(f"{r[0]:.5f},{r[1]:.5f},{r[2]:.5f},{'p' if r[0] > 0 else 'n'}\n")
    root = base / "repo"
    repo = veml.init(root)
    t = time.perf_counter()
    repo.data.import_("table", csv, "big", label="y")
    print(f"imported {n:,} rows in {time.perf_counter() - t:.1f} s")
    repo.close()
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="veml-bench-ui-") as tmp:
        root = build(Path(tmp), args.samples)
        srv = LiveServer(root)
        vid = srv.http.get("/versions/big").json()["id"]
        times: dict[str, list[float]] = {}

        def timed(name, fn):
            t = time.perf_counter()
            fn()
            times.setdefault(name, []).append((time.perf_counter() - t) * 1000)

        for _ in range(args.repeats):
            timed("api: page 1", lambda: srv.http.get(f"/data/{vid}/samples", params={"limit": 48}).raise_for_status())
            timed("api: filtered page", lambda: srv.http.get(f"/data/{vid}/samples", params={"limit": 48, "where": WHERE}).raise_for_status())
            timed("api: filtered + sorted page", lambda: srv.http.get(
                f"/data/{vid}/samples", params={"limit": 48, "where": WHERE, "sort": "b", "order": "desc"}).raise_for_status())
            timed("api: stats", lambda: srv.http.get(f"/data/{vid}/stats").raise_for_status())
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
        page.set_default_timeout(120_000)
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{srv.base_url}/#/lineage")  # the script and the version list, cached once
        page.wait_for_function("() => document.getElementById('main').dataset.state === 'ready'")
        for _ in range(args.repeats):
            def first_paint():
                page.goto(f"{srv.base_url}/#/data/{vid}?r={time.monotonic_ns()}")
                page.wait_for_function(READY)
            timed("browser: first paint of the grid", first_paint)

            def filtered(sort: bool):
                if sort:
                    page.select_option("#sort", "a")  # sorting alone reloads; then the filter is timed
                    page.wait_for_function("() => document.getElementById('samples').dataset.state === 'ready'")
                page.fill("#where", WHERE)
                page.press("#where", "Enter")
                page.wait_for_function("() => location.hash.includes('where=') && document.getElementById('samples').dataset.state === 'ready'")
            timed("browser: apply a filter", lambda: filtered(False))

            def next_page():
                page.click("#next")
                page.wait_for_function("() => location.hash.includes('offset=48') && document.getElementById('samples').dataset.state === 'ready'")
            timed("browser: next page (filtered)", next_page)
            first_paint()
            timed("browser: sort by a, then apply a filter (two loads)", lambda: filtered(True))
        shown = page.eval_on_selector_all("#samples tbody tr", "rs => rs.length")
        browser.close()
        pw.stop()
        total = httpx.get(f"{srv.base_url}/api/v1/data/{vid}/samples", params={"where": WHERE, "limit": 1}).json()["total"]
        srv.stop()
    load = os.getloadavg()
    print(f"\n{args.samples:,}-row table version; filter {WHERE!r} matches {total:,}; {shown} rows drawn per page; "
          f"{args.repeats} repeats; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(machine_line(machine_info()))
    print(f"| step | p50 (ms) | max (ms) |\n|---|---:|---:|")
    for name, xs in times.items():
        print(f"| {name} | {median(xs):.0f} | {max(xs):.0f} |")
    if errors:
        print("console errors:", errors)
        sys.exit(1)


if __name__ == "__main__":
    main()
