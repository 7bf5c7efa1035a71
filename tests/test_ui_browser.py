"""The web UI (issue 6, second part) in a real browser: Playwright drives the system Chromium.

One small repository is built from generated data (two image versions and their merge, two
tables, a tiny classifier trained twice with ``max_steps`` of 3 and 2, deployed, predicting on
the night images, a run logged with the SDK that names no model version, three drift reports (ks and core-set mmd with its 2-D projection on the tables, ks
on the day images with the deployed classifier, which adds its estimated accuracy) and a similarity
report); uvicorn serves it on a free loopback port.
The tests click through lineage → data version → models → training → deployment → prediction → reports
and compare what each page shows with the API's JSON for the same version.  Every request the
page makes must stay on the loopback server, the console must stay free of errors, and each
page is saved as a screenshot (``docs/screenshots/<page>.png`` and pytest's tmp dir).

Chromium is the system one (``/usr/bin/chromium``, or ``$VEML_CHROMIUM``); without it, or
without the ``playwright`` package, these tests fail (they never skip).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

import veml
from veml.datasets import Domain, generate_driving_coco
from conftest import write_table
from live_server import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

CHROMIUM = os.environ.get("VEML_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
UI = Path(veml.__file__).resolve().parent / "server" / "ui"
LOOPBACK = {"127.0.0.1", "localhost"}
CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "efficientnet_lite0",
              "parameters": {"pretrained": True, "freeze_backbone": True, "label_column": "time_of_day", "image_size": 64}}
WAIT_MS = 30_000


def _chromium_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install playwright==1.65.2 (the Python package only; no `playwright install`)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return (f"no Chromium at {CHROMIUM}: the UI tests drive the system Chromium (Debian: apt-get install chromium), "
                "or set VEML_CHROMIUM to a Chromium binary")
    return None


TOKEN = "ui-s3cret"


class Running(LiveServer):
    def __init__(self, root, token=None):
        super().__init__(root, token, timeout=60)
        self.base = self.base_url

    def get(self, path, **params):
        r = self.http.get(path, params=params)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    root = base / "repo"
    repo = veml.init(root)
    day = generate_driving_coco(base / "day", 12, seed=7, file_prefix="day")
    # 10 night images: the runs' test version, so the deployment's accuracy estimate has the 10 held-out samples it needs
    night = generate_driving_coco(base / "night", 10, seed=8, file_prefix="night",
                                  domain=Domain(city="tokyo", time_of_day="night", weather="rain"))
    repo.data.import_("coco", day, "day", images=day.parent / "images")
    repo.data.import_("coco", night, "night", role="test", images=night.parent / "images")
    repo.data.merge(["day", "night"], "both")
    repo.data.import_("table", write_table(base / "ta.csv", 0.0, 1), "table-a", label="y")
    repo.data.import_("table", write_table(base / "tb.csv", 3.0, 2), "table-b", label="y")
    repo.models.add("clf", CLASSIFIER)
    repo.training.train("both", "clf", sets=["max_steps=3", "batch_size=8"], test="night", name="clf-run")
    repo.training.train("both", "clf", sets=["max_steps=2", "batch_size=4", "lr=0.01"], test="night", name="clf-run-2")
    repo.inference.deploy("clf-run", name="clf-onnx")
    repo.inference.predict("clf-onnx", "night", name="clf-on-night")
    with repo.start_run(name="logged", data="both", params={"lr": 0.5}) as run:  # logged with the SDK, naming no model
        run.log_metric("accuracy", 0.5, step=1)
    repo.drift.check("table-a", "table-b", method="ks")
    repo.drift.check("table-a", "table-b", method="mmd", permutations=20)  # carries the core sets' 2-D projection
    repo.similarity.rank("table-a")
    # the deployed classifier on the day images (reference: its held-out test data): a report with the estimated accuracy
    repo.drift.check(None, "day", inference="clf-onnx", method="ks", name="day-vs-clf")
    repo.close()
    srv = Running(root)
    srv.root = root
    yield srv
    srv.stop()


class Browser:
    """One page for the whole module, with everything it asked for and said recorded."""

    def __init__(self, pw, srv, shots_tmp):
        self.srv = srv
        self.shots_tmp = shots_tmp
        self.browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(viewport={"width": 1200, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.console: list[str] = []
        self.failures: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        self.page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.failures.append(f"{r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.failures.append(f"{r.url} -> {r.status}"))

    def wait(self, hash_: str) -> None:
        """Until the page routed to ``hash_`` finished rendering and every thumbnail is drawn."""
        self.page.wait_for_function(
            "(h) => { const m = document.getElementById('main');"
            " return m && m.dataset.route === h && m.dataset.state !== 'loading' && window.vemlPending === 0; }", arg=hash_)
        state = self.page.eval_on_selector("#main", "m => m.dataset.state")
        assert state == "ready", self.page.inner_text("#main")[:500]

    def open(self, hash_: str) -> None:
        if not self.page.url.endswith(hash_):
            self.page.goto(f"{self.srv.base}/{hash_}")
        self.wait(hash_)

    def click(self, selector: str, then: str) -> None:
        self.page.click(selector)
        self.page.wait_for_function("(h) => location.hash === h", arg=then)
        self.wait(then)

    def values(self, selector: str) -> list[str]:
        return self.page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.value)")

    def value(self, selector: str) -> float:
        got = self.values(selector)
        assert len(got) == 1, (selector, got)
        return float(got[0])

    def chart(self, name: str) -> dict:
        charts = [c for c in self.page.evaluate("() => window.vemlCharts()") if c["name"] == name]
        assert len(charts) == 1, (name, charts)
        return charts[0]

    def shot(self, name: str) -> None:
        path = self.shots_tmp / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if not os.environ.get("VEML_UPDATE_SCREENSHOTS"):
            return  # the committed copies under docs/ change only when asked (VEML_UPDATE_SCREENSHOTS=1)
        SHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:  # the committed copy: a 256-colour palette keeps it small
            im.convert("RGB").quantize(256).save(SHOTS / f"{name}.png", optimize=True)

    def close(self):
        self.context.close()
        self.browser.close()


@pytest.fixture(scope="module")
def ui(request, tmp_path_factory):
    problem = _chromium_problem()  # before the repository is built: a missing browser fails at once
    if problem:
        pytest.fail(problem, pytrace=False)
    from playwright.sync_api import sync_playwright

    srv = request.getfixturevalue("world")
    pw = sync_playwright().start()
    try:
        b = Browser(pw, srv, tmp_path_factory.mktemp("screenshots"))
        yield b
        b.close()
    finally:
        pw.stop()


def ids_by_name(srv) -> dict[str, int]:
    return {v["name"]: v["id"] for v in srv.get("/versions", limit=500)["items"]}


# --- the browser is there ----------------------------------------------------------------------------------
def test_a_chromium_to_drive_is_installed():
    problem = _chromium_problem()
    assert problem is None, problem


# --- what the server sends ---------------------------------------------------------------------------------
def test_page_and_assets_ship_with_the_package(world):
    r = httpx.get(f"{world.base}/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    scripts = re.findall(r'<script src="([^"]+)"', r.text) + re.findall(r'href="([^"#][^"]*)"', r.text)
    assert scripts and all(s.startswith("/ui/") for s in scripts), scripts
    for s in scripts:
        asset = httpx.get(f"{world.base}{s}", timeout=30)
        assert asset.status_code == 200 and asset.content, s
    table = (UI / "VENDOR.md").read_text()
    for name, digest in re.findall(r"`([\w.]+\.js)` \([^)]*\) \| `([0-9a-f]{64})`", table):
        body = httpx.get(f"{world.base}/ui/vendor/{name}", timeout=30).content
        assert hashlib.sha256(body).hexdigest() == digest, name
    assert len(re.findall(r"`([\w.]+\.js)` \(", table)) == 2
    modules = ["app.js"]  # the ES modules app.js imports, and theirs
    for name in modules:
        code = httpx.get(f"{world.base}/ui/{name}", timeout=30)
        assert code.status_code == 200 and "javascript" in code.headers["content-type"], name
        # the UI's own scripts name no absolute URL (the SVG namespace is a name, never fetched)
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg')", code.text), name
        modules += [m for m in re.findall(r"from '\./([\w-]+\.js)'", code.text) if m not in modules]
    assert {"core.js", "grid.js", "detail.js", "analysis.js", "models.js"} <= set(modules)
    for bad in ("/ui/../app.py", "/ui/%2e%2e/__init__.py", "/ui/nope.js"):
        assert httpx.get(f"{world.base}{bad}", timeout=30).status_code == 404, bad
    assert "/" not in {p for p in world.get("/openapi.json")["paths"]}  # the UI stays out of the API document


# --- the pages ----------------------------------------------------------------------------------------------
PARTS = {"architecture", "backbone", "neck", "head", "coreset", "project"}


def test_lineage_graph_and_lifecycles(ui, world):
    versions = world.get("/versions", limit=500)["items"]
    ui.page.goto(f"{world.base}/")
    ui.wait("")
    shown = ui.page.evaluate("() => window.vemlCy.nodes().map(n => Number(n.id()))")
    assert sorted(shown) == sorted(v["id"] for v in versions if v["kind"] not in PARTS)
    edges = ui.page.evaluate("() => window.vemlCy.edges().map(e => [Number(e.source().id()), Number(e.target().id())])")
    expected = {(p, v["id"]) for v in versions if v["kind"] not in PARTS for p in v["parents"]
                if next(x for x in versions if x["id"] == p)["kind"] not in PARTS}
    assert {tuple(e) for e in edges} == expected
    kinds = ui.page.evaluate("() => Object.fromEntries(window.vemlCy.nodes().map(n => [n.data('kind'), n.style('background-color')]))")
    assert len(set(kinds.values())) == len(kinds) >= 6  # one colour per kind shown
    zoom = ui.page.evaluate("() => { const z = window.vemlCy.zoom(); window.vemlCy.zoom(z * 2); return [z, window.vemlCy.zoom()]; }")
    assert zoom[1] == pytest.approx(2 * zoom[0])
    ui.page.evaluate("() => { window.vemlCy.fit(undefined, 24); }")
    ui.page.check("#show-parts")
    assert ui.page.evaluate("() => window.vemlCy.nodes().length") == len(versions)
    ui.page.uncheck("#show-parts")

    lcs = world.get("/lifecycles")["items"]
    rows = ui.page.eval_on_selector_all("#lifecycles tbody tr", "rs => rs.map(r => [...r.querySelectorAll('a.vlink')].map(a => Number(a.dataset.id)))")
    assert rows == [[lc["data"], lc["model"], lc["training"], lc["inference"], lc["prediction"]] for lc in lcs]
    assert ui.values("#lifecycles tbody tr [data-key=accuracy]") == [str(lcs[0]["metric"]["value"])]
    ui.shot("lineage")

    # a click on the node "both" (on the canvas, where cytoscape drew it) opens its data page
    both = ids_by_name(world)["both"]
    at = ui.page.evaluate("(id) => { const n = window.vemlCy.getElementById(String(id)); const p = n.renderedPosition();"
                          " const b = window.vemlCy.container().getBoundingClientRect(); return [b.left + p.x, b.top + p.y]; }", both)
    ui.page.mouse.click(*at)
    ui.page.wait_for_function("(h) => location.hash === h", arg=f"#/data/{both}")
    ui.wait(f"#/data/{both}")


def test_data_version_page(ui, world):
    ids = ids_by_name(world)
    ui.open(f"#/data/{ids['both']}")
    stats = world.get("/data/both/stats")
    rows = world.get("/data/both/samples", limit=500)["items"]
    assert ui.value("[data-key=samples]") == stats["stats"]["samples"] == len(rows) == 22
    cats = stats["categories"]
    shown = dict(zip(ui.page.eval_on_selector_all("#categories tbody tr", "rs => rs.map(r => r.dataset.category)"),
                     map(int, ui.values("#categories tbody td.num .v"))))
    assert shown == cats
    chart = ui.chart("categories")
    assert dict(zip(chart["labels"], chart["datasets"][0]["data"])) == cats
    assert dict(zip(ui.chart("image-sizes")["labels"], ui.chart("image-sizes")["datasets"][0]["data"])) == stats["stats"]["image_sizes"]
    quant = stats["stats"]["boxes"]["area"]
    assert [float(x) for x in ui.values("#box-quantiles tr[data-row=area] .v")] == [quant[q] for q in ("min", "p25", "median", "p75", "max", "mean")]
    areas = ui.chart("box-areas")["datasets"][0]["data"]
    assert sum(areas) == stats["stats"]["boxes"]["count"]

    # every sample drawn, with one box per stored box annotation
    tiles = ui.page.eval_on_selector_all("#samples .tile", "ts => ts.map(t => [Number(t.dataset.id), t.dataset.loaded, Number(t.dataset.boxes)])")
    boxes = {r["data_id"]: sum(a["kind"] == "boxes" for a in r["annotations"]) for r in rows}
    assert {t[0]: t[2] for t in tiles} == boxes and all(t[1] == "1" for t in tiles)

    # the grid pages the whole version on the server, filtered with the CLI's --where language
    def grid_ids(selector="#samples .tile"):
        ui.page.wait_for_function("() => document.getElementById('samples').dataset.state === 'ready' && window.vemlPending === 0")
        return [int(x) for x in ui.page.eval_on_selector_all(selector, "ts => ts.map(t => t.dataset.id)")]

    def where(text):
        ui.page.fill("#where", text)
        ui.page.press("#where", "Enter")
        ui.page.wait_for_function("(w) => (new URLSearchParams(location.hash.split('?')[1] || '').get('where') || '') === w", arg=text)
        return grid_ids()

    api_ids = lambda **p: [r["data_id"] for r in world.get("/data/both/samples", limit=500, **p)["items"]]  # noqa: E731
    signs = where("category = 'sign'")
    assert signs == api_ids(where="category = 'sign'") and ui.value("[data-key=matching]") == len(signs)
    night_signs = where("category = 'sign' AND time_of_day = 'night'")
    assert night_signs == api_ids(where="category = 'sign' AND time_of_day = 'night'") and 0 < len(night_signs) < len(signs)
    assert ui.page.evaluate("() => document.getElementById('main').dataset.route") == ui.page.evaluate("() => location.hash")
    assert where("") == api_ids() and ui.value("[data-key=matching]") == 22
    ui.page.select_option("#sort", "file_name")
    ui.page.select_option("#order", "desc")
    ui.page.wait_for_function("() => location.hash.includes('order=desc')")
    assert grid_ids() == api_ids(sort="file_name", order="desc")

    # keyboard: arrows move the selection, Enter opens the sample full size, Esc closes it
    ui.page.focus("#samples")
    ui.page.keyboard.press("ArrowRight")
    ui.page.keyboard.press("ArrowRight")
    picked = int(ui.page.eval_on_selector("#samples", "g => g.dataset.selectedId"))
    assert picked == api_ids(sort="file_name", order="desc")[2]
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_function("() => { const d = document.getElementById('detail'); return d && d.dataset.state === 'ready' && window.vemlPending === 0; }")
    detail = world.get(f"/data/both/samples/{picked}")
    gt = sum(a["kind"] == "boxes" for a in detail["sample"]["annotations"])
    assert int(ui.page.eval_on_selector("#panels .panel[data-source=ground-truth]", "p => p.dataset.boxes")) == gt
    assert ui.page.locator("#panels .panel[data-source=ground-truth] g.box").count() == gt
    assert ui.page.locator("#ann-table tbody tr").count() == len(detail["sample"]["annotations"])
    assert [int(x) for x in ui.page.eval_on_selector_all("#sample-versions a.vlink", "as => as.map(a => a.dataset.id)")] == detail["versions"]
    assert ids["both"] in detail["versions"] and (ids["day"] in detail["versions"]) != (ids["night"] in detail["versions"])
    natural = ui.page.eval_on_selector("#panels .panel[data-source=ground-truth] svg", "s => s.getAttribute('viewBox')")
    assert natural == f"0 0 {detail['sample']['width']} {detail['sample']['height']}"  # full size, not the thumbnail
    preds = {int(x.split(":")[1]) for x in ui.page.eval_on_selector_all("#panels .panel", "ps => ps.map(p => p.dataset.source)") if x.startswith("prediction:")}
    assert preds == ({ids["clf-on-night"]} if ids["night"] in detail["versions"] else set())
    ui.shot("sample")
    ui.page.keyboard.press("Escape")
    ui.page.wait_for_function("() => !document.getElementById('detail')")
    ui.page.select_option("#order", "asc")
    ui.page.select_option("#sort", "data_id")
    ui.page.wait_for_function("() => !location.hash.includes('?')")
    grid_ids()
    # diff against "day": the merge adds the 10 night samples
    ui.page.select_option("#diff-with", str(ids["day"]))
    ui.page.wait_for_function("() => document.getElementById('diff').dataset.state === 'ready'")
    day = world.get("/data/day/stats")
    assert ui.value("#diff-samples [data-key=only-here]") == 10 and ui.value("#diff-samples [data-key=only-there]") == 0
    assert ui.value("#diff-samples [data-key=common]") == day["stats"]["samples"] == 12
    deltas = dict(zip(ui.page.eval_on_selector_all("#diff-categories tbody tr", "rs => rs.map(r => r.dataset.category)"),
                      map(int, ui.values("#diff-categories [data-key=delta]"))))
    assert deltas == {c: cats.get(c, 0) - day["categories"].get(c, 0) for c in set(cats) | set(day["categories"])}
    ui.page.wait_for_function("() => window.vemlPending === 0")
    ui.shot("data")

    # the version's users: the training runs on it
    ui.click(f"#used-by a[data-id='{ids['clf-run']}']", f"#/training/{ids['clf-run']}")


def test_table_data_version_page(ui, world):
    ids = ids_by_name(world)
    ui.open(f"#/data/{ids['table-a']}")
    stats = world.get("/data/table-a/stats")
    rows = world.get("/data/table-a/samples", limit=500)["items"]
    assert ui.value("[data-key=samples]") == 40 and ui.page.locator("#samples tbody tr").count() == 40
    for col, s in stats["stats"]["columns"].items():
        assert float(ui.values(f"#column-stats tr[data-column={col}] [data-key=mean]")[0]) == s["mean"]
    # a page of 16 rows at a time; a click on a column header sorts by it (again: the other way)
    ui.page.goto(f"{world.base}/#/data/{ids['table-a']}?limit=16")
    ui.wait(f"#/data/{ids['table-a']}?limit=16")
    shown = lambda: [int(x) for x in ui.page.eval_on_selector_all("#samples tbody tr", "rs => rs.map(r => r.dataset.id)")]  # noqa: E731
    ready = "() => document.getElementById('samples').dataset.state === 'ready'"
    assert shown() == [r["data_id"] for r in rows[:16]]
    ui.page.click("#next")
    ui.page.wait_for_function("() => location.hash.includes('offset=16')")
    ui.page.wait_for_function(ready)
    assert shown() == [r["data_id"] for r in rows[16:32]] and ui.value("[data-key=first]") == 17
    ui.page.click("#samples th[data-sort=b]")
    ui.page.wait_for_function("() => location.hash.includes('sort=b') && !location.hash.includes('offset')")
    ui.page.wait_for_function(ready)
    assert shown() == [r["data_id"] for r in world.get("/data/table-a/samples", sort="b", limit=16)["items"]]
    ui.page.click("#samples th[data-sort=b]")
    ui.page.wait_for_function("() => location.hash.includes('order=desc')")
    ui.page.wait_for_function(ready)
    by_b = world.get("/data/table-a/samples", sort="b", order="desc", limit=16)["items"]
    assert shown() == [r["data_id"] for r in by_b] and by_b[0]["meta"]["b"] == max(r["meta"]["b"] for r in rows)
    ui.page.focus("#samples")
    ui.page.keyboard.press("ArrowDown")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_function("() => { const d = document.getElementById('detail'); return d && d.dataset.state === 'ready'; }")
    assert float(ui.page.eval_on_selector("#sample-columns tr[data-column=b] .v", "v => v.dataset.value")) == by_b[1]["meta"]["b"]
    ui.page.click("#detail-close")
    ui.page.wait_for_function("() => !document.getElementById('detail')")
    # a filter the language refuses: the API's one-line error, shown beside the box
    console, failures = len(ui.console), len(ui.failures)
    ui.page.fill("#where", "a >")
    ui.page.press("#where", "Enter")
    ui.page.wait_for_function("() => document.getElementById('samples').dataset.state === 'error'")
    assert ui.page.inner_text("#where-error") == world.http.get("/data/table-a/samples", params={"where": "a >"}).json()["error"]
    assert all("400" in f for f in ui.failures[failures:]) and all("400" in c for c in ui.console[console:])
    del ui.failures[failures:], ui.console[console:]


def test_training_page_overlays_runs(ui, world):
    ids = ids_by_name(world)
    ui.open(f"#/training/{ids['clf-run']}")
    t = world.get("/training/clf-run")
    logs = world.get("/training/clf-run/logs", limit=500)["logs"]
    other = world.get("/training/clf-run-2/logs", limit=500)["logs"]
    assert ui.page.inner_text("#status") == t["status"] == "finished"
    for key, v in t["metrics"].items():
        if isinstance(v, (int, float)):
            assert ui.value(f"#metrics tr[data-metric={key}] .v") == v
    loss = [r["value"] for r in logs if r["key"] == "loss"]
    curve = ui.chart("curve:loss")
    assert [d["label"] for d in curve["datasets"]] == ["clf-run"]
    assert [p["y"] for p in curve["datasets"][0]["data"]] == loss and len(loss) == 3
    assert ui.value(f"#last-values tr[data-run='{ids['clf-run']}'] [data-key=loss]") == loss[-1]

    ui.page.check(f"#compare-{ids['clf-run-2']}")
    ui.page.wait_for_function("() => document.getElementById('curves').dataset.state === 'ready'")
    curve = ui.chart("curve:loss")
    assert [d["label"] for d in curve["datasets"]] == ["clf-run", "clf-run-2"]
    assert [p["y"] for p in curve["datasets"][1]["data"]] == [r["value"] for r in other if r["key"] == "loss"]
    heads = ui.page.eval_on_selector_all("#params thead th", "ths => ths.map(t => t.textContent)")
    assert heads == ["parameter", "clf-run", "clf-run-2"]
    lr = ui.page.locator("#params tr[data-param=lr]")
    assert "diff" in lr.get_attribute("class") and [float(x) for x in ui.values("#params tr[data-param=lr] .v")] == [0.001, 0.01]
    assert "diff" not in (ui.page.locator("#params tr[data-param=optimizer]").get_attribute("class") or "")
    t2 = world.get("/training/clf-run-2")
    for key, v in t["metrics"].items():
        if isinstance(v, (int, float)):
            shown = [float(x) for x in ui.values(f"#metrics-compare tr[data-metric={key}] .v")]
            assert shown == [v, t2["metrics"][key]]
            assert ("diff" in (ui.page.locator(f"#metrics-compare tr[data-metric={key}]").get_attribute("class") or "")) == (v != t2["metrics"][key])
    ui.shot("training")

    ui.click(f"#deployments a[data-id='{ids['clf-onnx']}']", f"#/inference/{ids['clf-onnx']}")


def test_models_view_compares_versions_side_by_side(ui, world):
    ids = ids_by_name(world)
    run, run2, clf = ids["clf-run"], ids["clf-run-2"], ids["clf"]
    ui.open("#/lineage")
    ui.click(f"#lifecycles a.vlink[data-id='{clf}']", f"#/models/{clf}")  # a model version's link opens it here, ticked
    assert ui.page.is_checked(f"#pick-{clf}") and ui.page.get_attribute("#nav a[data-page=models]", "class") == "active"
    ui.page.focus(f"#pick-{clf}")
    ui.page.keyboard.press("Space")
    assert not ui.page.is_checked(f"#pick-{clf}")
    models = world.get("/versions", kind="model", limit=500)["items"]
    runs = world.get("/versions", kind="training", limit=500)["items"]
    listed = ui.page.eval_on_selector_all("#models tbody tr", "rs => rs.map(r => [r.className, Number(r.dataset.id || -1)])")
    loose = [["run", t["id"]] for t in runs if t["model"] is None]
    assert loose == [["run", ids["logged"]]]  # a logged run naming no model version: listed after the models
    assert listed == [x for m in models for x in [["model", m["id"]]] + [["run", t["id"]] for t in runs if t["model"] == m["id"]]] + [["section", -1]] + loose

    def compared(refs):
        want = ",".join(str(r) for r in refs)
        ui.page.wait_for_function("(w) => new URLSearchParams(location.hash.split('?')[1] || '').get('compare') === w"
                                  " && document.getElementById('model-compare').dataset.state === 'ready'", arg=want)
        api = world.http.get("/models/compare", params=[("ref", str(r)) for r in refs]).json()
        assert ui.page.eval_on_selector_all("#compare-table thead th[data-id]", "ths => ths.map(t => Number(t.dataset.id))") == refs
        assert [v["id"] for v in api["versions"]] == refs
        return api

    def shown_rows():
        return ui.page.eval_on_selector_all("#compare-table tbody tr[data-key]", "rs => rs.map(r => [r.dataset.section, r.dataset.key,"
                                            " r.classList.contains('diff'), [...r.querySelectorAll('td[data-value]')].map(d => d.dataset.value)])")

    # keyboard: a box has the focus, Space ticks it; the two runs side by side, as the API has them
    for ref in (run, run2):
        ui.page.focus(f"#pick-{ref}")
        ui.page.keyboard.press("Space")
    c = compared([run, run2])
    assert shown_rows() == [[r["section"], r["key"], r["differs"], [json.dumps(x) for x in r["values"]]] for r in c["rows"]]
    assert [json.loads(x) for x in ui.values("#compare-table tr[data-key='params.lr'] td[data-value]")] == [0.001, 0.01]
    differs = {(r["section"], r["key"]) for r in c["rows"] if r["differs"]}
    assert {("training", "params.lr"), ("training", "params.max_steps")} <= differs and not any(s == "model" for s, _ in differs)
    assert ui.value("#compare-count") == c["differing"] == len(differs)
    # the data a run trained on links to that version
    assert ui.page.eval_on_selector_all("#compare-table tr[data-key=data] a.vlink", "as => as.map(a => Number(a.dataset.id))") == [ids["both"]] * 2
    ui.page.click("#only-diff")
    assert [(r[0], r[1]) for r in shown_rows()] == [(r["section"], r["key"]) for r in c["rows"] if r["differs"]]
    assert all(r[2] for r in shown_rows()) and "diff=1" in ui.page.evaluate("() => location.hash")
    ui.page.click("#only-diff")
    # the logged run beside them: no model rows of its own, its lr and accuracy where the others have theirs
    ui.page.click(f"#pick-{ids['logged']}")
    c = compared([run, run2, ids["logged"]])
    assert shown_rows() == [[r["section"], r["key"], r["differs"], [json.dumps(x) for x in r["values"]]] for r in c["rows"]]
    assert [json.loads(x) for x in ui.values("#compare-table tr[data-key='params.lr'] td[data-value]")] == [0.001, 0.01, 0.5]
    assert [json.loads(x) for x in ui.values("#compare-table tr[data-key=architecture] td[data-value]")] == ["efficientnet_lite0"] * 2 + [None]
    ui.page.click(f"#pick-{ids['logged']}")
    compared([run, run2])

    # a click adds the model version itself: its model rows beside the runs', no training or metrics of its own
    ui.page.click(f"#pick-{clf}")
    c = compared([clf, run, run2])
    assert shown_rows() == [[r["section"], r["key"], r["differs"], [json.dumps(x) for x in r["values"]]] for r in c["rows"]]
    assert all(r["values"][0] is None for r in c["rows"] if r["section"] != "model")
    assert all(len(set(json.dumps(x) for x in r["values"])) == 1 for r in c["rows"] if r["section"] == "model")
    ui.shot("models")

    # each column links to its version's lineage
    assert ui.page.get_attribute(f"#compare-table th[data-id='{run2}'] a.lineage-link", "href") == f"#/lineage/{run2}"
    ui.click(f"#compare-table th[data-id='{run2}'] a.lineage-link", f"#/lineage/{run2}")
    shown = ui.page.evaluate("() => window.vemlCy.nodes().map(n => Number(n.id()))")
    assert run2 in shown and clf in shown and ids["both"] in shown


def test_lineage_pages_a_large_answer(ui, world):
    both = ids_by_name(world)["both"]
    pages_, cursor = [], None
    while True:
        p = world.get(f"/lineage/{both}", direction="both", limit=3, **({"cursor": cursor} if cursor else {}))
        pages_.append(p)
        cursor = p["next_cursor"]
        if not cursor:
            break
    total = pages_[0]["total"]
    assert len(pages_) >= 3 and sum(len(p["nodes"]) for p in pages_) == total
    ui.open(f"#/lineage/{both}?limit=3")
    ui.page.check("#show-parts")
    nodes = lambda: sorted(ui.page.evaluate("() => window.vemlCy.nodes().map(n => Number(n.id()))"))  # noqa: E731
    edges = lambda: sorted(ui.page.evaluate("() => window.vemlCy.edges().map(e => [Number(e.source().id()), Number(e.target().id())])"))  # noqa: E731
    for i, page_ in enumerate(pages_):
        loaded = [n["id"] for p in pages_[:i + 1] for n in p["nodes"]]
        ends = set(loaded)
        joined = [[e["src"], e["dst"]] for p in pages_[:i + 1] for e in p["edges"] + p["boundary_edges"]]
        assert nodes() == sorted(loaded) and edges() == sorted(e for e in joined if e[0] in ends and e[1] in ends)
        assert ui.page.inner_text("#lineage-page") == f"{len(loaded)} of {total} shown"
        if i == 1:
            ui.shot("lineage-paged")  # part of the answer loaded, with the control for the rest
        if page_["next_cursor"] is None:
            assert ui.page.locator("#load-more").is_hidden()
            break
        ui.page.focus("#load-more")  # the keyboard: Enter on the focused button loads the next page
        ui.page.keyboard.press("Enter")
        ui.page.wait_for_function("(n) => document.getElementById('lineage-more').dataset.state === 'ready'"
                                  " && Number(document.getElementById('lineage-page').dataset.value) > n", arg=len(loaded))
    # all of it: the very graph of one big page, the focus node marked
    whole = world.get(f"/lineage/{both}", direction="both", limit=10000)
    assert nodes() == sorted(n["id"] for n in whole["nodes"]) == world.get(f"/lineage/{both}/ids", direction="both")["ids"]
    assert edges() == sorted([e["src"], e["dst"]] for e in whole["edges"]) and whole["next_cursor"] is None
    assert ui.page.evaluate(f"() => window.vemlCy.getElementById('{both}').hasClass('focus')")
    ui.page.uncheck("#show-parts")
    # a small answer has no paging control
    ui.page.goto(f"{world.base}/#/lineage/{both}")
    ui.wait(f"#/lineage/{both}")
    assert ui.page.locator("#lineage-more").count() == 0 and len(nodes()) == len([n for n in whole["nodes"] if n["kind"] not in PARTS])


def test_the_whole_graph_pages_newest_first(ui, world):
    versions = sorted(world.get("/versions", limit=500)["items"], key=lambda v: -v["id"])
    assert len(versions) > 6
    ui.open("#/lineage?limit=3")
    ui.page.check("#show-parts")
    nodes = lambda: sorted(ui.page.evaluate("() => window.vemlCy.nodes().map(n => Number(n.id()))"))  # noqa: E731
    edges = lambda: sorted(ui.page.evaluate("() => window.vemlCy.edges().map(e => [Number(e.source().id()), Number(e.target().id())])"))  # noqa: E731
    for shown in (3, 6):
        drawn = versions[:shown]
        ids = {v["id"] for v in drawn}
        assert nodes() == sorted(ids) and ui.page.inner_text("#lineage-page") == f"{shown} of {len(versions)} shown"
        assert edges() == sorted([p, v["id"]] for v in drawn for p in v["parents"] if p in ids)
        if shown == 3:
            ui.page.focus("#load-more")  # the keyboard: Enter on the focused button draws the next page
            ui.page.keyboard.press("Enter")
            ui.page.wait_for_function("() => document.getElementById('lineage-more').dataset.state === 'ready'"
                                      " && Number(document.getElementById('lineage-page').dataset.value) > 3")
    ui.page.uncheck("#show-parts")


def test_inference_and_prediction_pages(ui, world):
    ids = ids_by_name(world)
    ui.open(f"#/inference/{ids['clf-onnx']}")
    dep = world.get("/versions/clf-onnx")
    for key in ("latency_ms", "original_latency_ms", "size_bytes", "agreement"):
        assert ui.value(f".facts [data-key={key}]") == dep[key]
    assert ui.values(f"#deployments tr.current[data-id='{dep['id']}'] [data-key=latency_ms]") == [str(dep["latency_ms"])]
    assert ui.chart("latency")["datasets"][0]["data"] == [dep["latency_ms"]]
    ui.shot("inference")

    ui.click(f"#predictions a[data-id='{ids['clf-on-night']}']", f"#/prediction/{ids['clf-on-night']}")
    pred = world.get("/predictions/clf-on-night")
    m = pred["metrics"]
    assert ui.value("[data-key=key_metric]") == pred["key_metric"]["value"] == m["accuracy"]
    for key in ("accuracy", "macro_f1", "log_loss"):
        assert ui.value(f"#metrics tr[data-metric={key}] .v") == m[key]
    cm = ui.page.eval_on_selector_all("#confusion tbody tr", "rs => rs.map(r => [...r.querySelectorAll('.v')].map(v => Number(v.dataset.value)))")
    assert cm == m["confusion_matrix"]
    for cls, row in m["per_class"].items():
        for key, v in row.items():
            assert ui.value(f"#per-class tr[data-class={cls}] [data-key={key}]") == v
    tiles = ui.page.eval_on_selector_all("#worst .tile", "ts => ts.map(t => [Number(t.dataset.id), t.dataset.loaded, t.classList.contains('bad')])")
    assert [t[0] for t in tiles] == [w["data_id"] for w in pred["worst"]] and all(t[1] == "1" for t in tiles)
    assert [t[2] for t in tiles] == [w["pred"] != w["true"] for w in pred["worst"]]
    ui.shot("prediction")

    # analysis: PR curves as the API has them; a confusion-matrix cell opens its samples, sortable by loss or confidence
    curves = world.get("/predictions/clf-on-night/curves")["curves"]
    pr = ui.chart("pr")
    assert [[p["x"] for p in d["data"]] for d in pr["datasets"]] == [c["recall"] for c in curves]
    assert [[p["y"] for p in d["data"]] for d in pr["datasets"]] == [c["precision"] for c in curves]
    assert [float(x) if x else None for x in ui.values("#ap [data-key=ap]")] == [c["ap"] for c in curves]
    cells = ui.page.eval_on_selector_all("#confusion tbody td[data-pred]", "ts => ts.map(t => [t.closest('tr').dataset.true, t.dataset.pred, Number(t.querySelector('.v').dataset.value)])")
    t, p_, n = max(cells, key=lambda c: c[2])
    every = world.get("/predictions/clf-on-night/outcomes", limit=500)
    assert every["total"] == pred["samples"] and [i["loss"] for i in every["items"]] == sorted((i["loss"] for i in every["items"]), reverse=True)
    hash_ = f"#/prediction/{ids['clf-on-night']}?true={t}&pred={p_}"
    ui.click(f"#confusion tr[data-true='{t}'] td[data-pred='{p_}'] a", hash_)
    cell = world.get("/predictions/clf-on-night/outcomes", true=t, pred=p_, limit=500)
    shown = lambda: [int(x) for x in ui.page.eval_on_selector_all("#outcomes .tile", "ts => ts.map(t => t.dataset.id)")]  # noqa: E731
    assert shown() == [i["data_id"] for i in cell["items"]] and cell["total"] == n == ui.value("[data-key=outcomes]")
    assert all(i["true"] == t and i["pred"] == p_ for i in cell["items"])
    ui.page.select_option("#outcome-sort", "confidence")
    ui.page.wait_for_function("() => location.hash.includes('sort=confidence') && document.getElementById('outcomes').dataset.state === 'ready' && window.vemlPending === 0")
    by_conf = world.get("/predictions/clf-on-night/outcomes", true=t, pred=p_, sort="confidence", limit=500)["items"]
    assert shown() == [i["data_id"] for i in by_conf]
    assert [float(x) for x in ui.page.eval_on_selector_all("#outcomes .tile", "ts => ts.map(t => t.dataset.confidence)")] == [i["confidence"] for i in by_conf]
    ui.page.focus("#outcomes")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_function("() => { const d = document.getElementById('detail'); return d && d.dataset.state === 'ready' && window.vemlPending === 0; }")
    assert int(ui.page.eval_on_selector("#detail", "d => d.dataset.id")) == by_conf[0]["data_id"]
    assert ui.page.inner_text(f"#panels .panel[data-source='prediction:{ids['clf-on-night']}'] .pred-label").startswith(p_)
    ui.page.keyboard.press("Escape")
    ui.page.wait_for_function("() => !document.getElementById('detail')")
    ui.shot("prediction-analysis")


def test_reports_page(ui, world):
    ui.open("#/lineage")
    ui.click("#nav a[data-page=reports]", "#/reports")
    drift = world.get("/reports", kind="drift")["items"]
    sim = world.get("/reports", kind="similarity")["items"]
    assert len(drift) == 3 and len(sim) == 1
    d = next(r for r in drift if r["method"] == "ks" and r["inference"] is None)
    assert "projection" not in d
    row = f"#drift tr[data-id='{d['id']}']"
    assert ui.value(f"{row} [data-key=p_value]") == d["p_value"] and ui.value(f"{row} [data-key=statistic]") == d["statistic"]
    assert ui.values(f"{row} [data-key=decision]") == [str(d["drift"]).lower()] and d["drift"] is True
    assert float(ui.page.inner_text(f"{row} [data-key=p_value]")) == pytest.approx(d["p_value"], rel=1e-3)
    ranking = sim[0]["ranking"]
    names = ui.page.eval_on_selector_all(f".similarity[data-id='{sim[0]['id']}'] .ranking a.vlink", "as => as.map(a => a.textContent)")
    assert names == [r["name"] for r in ranking] == ["table-b"]
    assert [float(x) for x in ui.values(f".similarity[data-id='{sim[0]['id']}'] [data-key=distance]")] == [r["distance"] for r in ranking]
    assert ui.chart(f"similarity:{sim[0]['id']}")["datasets"][0]["data"] == [r["distance"] for r in ranking]

    # the core-set MMD report's projection: one scatter chart, reference and test core sets as the API has them
    mmd = next(r for r in drift if r["method"] == "mmd")
    proj = mmd["projection"]
    assert len(proj["reference"]) == mmd["details"]["landmarks"] and 0 < len(proj["test"]) <= mmd["n_test"]
    scatter = ui.chart(f"projection:{mmd['id']}")
    ref, test = scatter["datasets"]
    assert ref["label"].startswith("reference") and test["label"].startswith("test")
    assert [[p["x"], p["y"]] for p in ref["data"]] == proj["reference"]
    assert [[p["x"], p["y"]] for p in test["data"]] == proj["test"]
    assert ui.page.locator(f".projection[data-id='{mmd['id']}'] canvas[data-chart='projection:{mmd['id']}']").count() == 1
    assert ui.page.locator("#projection-note").count() == 0

    # the report made with the deployed classifier: its estimated accuracy on the batch, with the interval
    est = next(r for r in drift if r["inference"] is not None)
    e = est["estimate"]
    assert est["inference"] == ids_by_name(world)["clf-onnx"] and e["metric"] == "accuracy" and e["low"] <= e["value"] <= e["high"]
    cell = f"#drift tr[data-id='{est['id']}'] [data-key=estimate]"
    assert ui.value(cell) == e["value"]
    assert ui.page.inner_text(cell) == f"accuracy {e['value']:.3f} [{e['low']:.3f}–{e['high']:.3f}]"
    assert ui.page.get_attribute(cell, "title") == f"{e['method']}; {e['reference_value']:.3f} on held-out data"
    assert ui.page.inner_text(f"#drift tr[data-id='{est['id']}'] a.vlink[data-id='{est['inference']}']") == "clf-onnx"
    assert ui.page.locator(f"#drift tr[data-id='{d['id']}'] [data-key=estimate]").count() == 0  # no deployment, no estimate
    ui.shot("reports")


def test_an_unknown_version_shows_the_api_error(ui, world):
    console, failures = len(ui.console), len(ui.failures)
    ui.page.goto(f"{world.base}/#/data/no-such-version")
    ui.page.wait_for_function("() => document.getElementById('main').dataset.state === 'error'")
    message = world.http.get("/data/no-such-version/stats").json()["error"]
    assert ui.page.inner_text("#error") == message
    # the browser reports the 404 itself (a failed response and a console line): expected here, so taken out
    assert [f for f in ui.failures[failures:] if "/api/v1/data/no-such-version/stats -> 404" not in f] == []
    assert all("404" in c for c in ui.console[console:])
    del ui.failures[failures:], ui.console[console:]


def test_ui_behind_a_token(ui, world):
    """With --token the page and its files load without it; the API does not, so the page asks for the token."""
    guarded = Running(world.root, token=TOKEN)
    context = ui.browser.new_context(viewport={"width": 1200, "height": 800})  # its own sessionStorage
    try:
        assert httpx.get(f"{guarded.base}/", timeout=30).status_code == 200
        assert httpx.get(f"{guarded.base}/ui/app.js", timeout=30).status_code == 200
        anon = httpx.get(f"{guarded.base}/api/v1/versions", timeout=30)
        assert anon.status_code == 401 and anon.json() == {"error": "missing or wrong bearer token"}
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        api_auth: list[str | None] = []
        page.on("request", lambda r: "/api/v1/" in r.url and api_auth.append(r.headers.get("authorization")))
        state = "() => document.getElementById('main').dataset.state"
        page.goto(f"{guarded.base}/")
        page.wait_for_function(f"() => ({state})() === 'token'")
        assert page.locator("#token-form").is_visible() and page.locator("#token-error").count() == 0

        page.fill("#token", "not-the-token")
        page.click("#token-submit")
        page.wait_for_function("() => !!document.getElementById('token-error')")
        assert page.evaluate(state) == "token" and page.locator("#token-form").is_visible()
        assert "refused" in page.inner_text("#token-error")
        assert page.evaluate("() => sessionStorage.getItem('veml.token')") is None

        page.fill("#token", TOKEN)
        page.click("#token-submit")
        page.wait_for_function(f"() => ({state})() !== 'loading' && ({state})() !== 'token'")
        assert page.evaluate(state) == "ready", page.inner_text("#main")[:500]
        assert page.evaluate("() => document.body.dataset.page") == "lineage"
        versions = guarded.get("/versions", limit=500)["items"]
        shown = page.evaluate("() => window.vemlCy.nodes().map(n => Number(n.id()))")
        assert sorted(shown) == sorted(v["id"] for v in versions if v["kind"] not in PARTS)
        assert page.evaluate("() => sessionStorage.getItem('veml.token')") == TOKEN

        # thumbnails too: fetched with the header (an <img src> could not carry it), every one drawn
        day = ids_by_name(guarded)["day"]
        page.goto(f"{guarded.base}/#/data/{day}")
        page.wait_for_function("(h) => { const m = document.getElementById('main'); return m.dataset.route === h"
                               " && m.dataset.state === 'ready' && window.vemlPending === 0; }", arg=f"#/data/{day}")
        loaded = page.eval_on_selector_all("#samples .tile", "ts => ts.map(t => t.dataset.loaded)")
        assert loaded and all(x == "1" for x in loaded)
        # the sample view behind the token: its JSON and the full-size image both fetched with the header
        page.focus("#samples")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.getElementById('detail')?.dataset.state === 'ready' && window.vemlPending === 0")
        assert page.eval_on_selector("#panels .panel image", "i => i.getAttribute('href')").startswith("blob:")
        page.keyboard.press("Escape")
        # the models view's comparison, linked with its selection
        runs = [ids_by_name(guarded)[n] for n in ("clf-run", "clf-run-2")]
        page.goto(f"{guarded.base}/#/models?compare={runs[0]},{runs[1]}")
        page.wait_for_function("() => document.getElementById('model-compare')?.dataset.state === 'ready' && window.vemlPending === 0")
        assert page.eval_on_selector_all("#compare-table thead th[data-id]", "ths => ths.map(t => Number(t.dataset.id))") == runs
        assert page.is_checked(f"#pick-{runs[0]}") and page.is_checked(f"#pick-{runs[1]}")
        assert api_auth[-1] == f"Bearer {TOKEN}"
        assert api_auth.count(None) == 1  # only the very first call, before the form was shown
        assert all(a in (None, "Bearer not-the-token", f"Bearer {TOKEN}") for a in api_auth)
    finally:
        context.close()
        guarded.stop()


def test_nothing_left_loopback_and_the_console_stayed_clean(ui):
    assert ui.requests, "no request was recorded"
    # thumbnails are fetched (with the token, when there is one) and drawn from blob URLs of the page's own origin
    blobs = [u for u in ui.requests if u.startswith("blob:")]
    assert all(u.startswith(f"blob:{ui.srv.base}/") for u in blobs), blobs[:3]
    fetched = [u.removeprefix("blob:") for u in ui.requests]
    outside = [u for u in fetched if urlsplit(u).scheme not in ("http", "https") or urlsplit(u).hostname not in LOOPBACK]
    assert outside == []
    assert {urlsplit(u).port for u in fetched} == {ui.srv.port}
    assert any("/ui/vendor/cytoscape.min.js" in u for u in ui.requests) and any("/image?thumbnail=" in u for u in ui.requests)
    assert ui.console == []
    assert ui.failures == []
    assert {p.stem for p in ui.shots_tmp.glob("*.png")} >= {"data", "sample", "inference", "lineage", "lineage-paged", "models",
                                                          "prediction", "prediction-analysis", "reports", "training"}


# --- a detection prediction: predicted boxes over the ground truth on the worst tiles ----------------------
DETECTOR = {"adapter": "torch", "task": "detection", "architecture": "fasterrcnn", "backbone": "efficientnet_lite0",
            "parameters": {"image_size": 64, "pretrained_backbone": True, "freeze_backbone": True}}


def _watched_page(ui):
    """A page in its own context whose console errors, uncaught exceptions and failed responses land in ``problems``."""
    context = ui.browser.new_context(viewport={"width": 1200, "height": 800})
    problems: list[str] = []
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.url} -> {r.status}"))
    return context, page, problems


@pytest.fixture(scope="module")
def det_world(tmp_path_factory):
    """Its own small repository and server (the main one keeps its single classifier lifecycle)."""
    base = tmp_path_factory.mktemp("ui-det")
    root = base / "repo"
    repo = veml.init(root)
    train = generate_driving_coco(base / "train", 6, seed=21, file_prefix="train")
    test = generate_driving_coco(base / "test", 4, seed=22, file_prefix="test", domain=Domain(time_of_day="night"))
    repo.data.import_("coco", train, "det-train", images=train.parent / "images")
    repo.data.import_("coco", test, "det-test", role="test", images=test.parent / "images")
    repo.models.add("det", DETECTOR)
    repo.training.train("det-train", "det", sets=["max_steps=2", "batch_size=4"], test="det-test", name="det-run")
    repo.inference.deploy("det-run", name="det-onnx")
    repo.inference.predict("det-onnx", "det-test", name="det-on-test")
    repo.close()
    srv = Running(root)
    yield srv
    srv.stop()


def test_detection_prediction_draws_predicted_boxes_over_the_ground_truth(ui, det_world):
    pred = det_world.get("/predictions/det-on-test")
    assert pred["task"] == "detection" and pred["worst"]
    context, page, problems = _watched_page(ui)
    try:
        hash_ = f"#/prediction/{pred['id']}"
        page.goto(f"{det_world.base}/{hash_}")
        page.wait_for_function("(h) => { const m = document.getElementById('main'); return m.dataset.route === h"
                               " && m.dataset.state !== 'loading' && window.vemlPending === 0; }", arg=hash_)
        assert page.eval_on_selector("#main", "m => m.dataset.state") == "ready", page.inner_text("#main")[:500]
        legend = page.inner_text("#worst-legend")
        assert "ground truth" in legend and "predicted" in legend
        tiles = page.eval_on_selector_all(
            "#worst .tile", "ts => ts.map(t => [Number(t.dataset.id), t.dataset.loaded, Number(t.dataset.boxes), Number(t.dataset.predBoxes)])")
        assert [t[0] for t in tiles] == [w["data_id"] for w in pred["worst"][:24]] and all(t[1] == "1" for t in tiles)
        samples = {s["data_id"]: s for s in det_world.get("/data/det-test/samples", limit=500)["items"]}
        drawn = 0
        for data_id, _, gt, shown in tiles:
            rows = det_world.get(f"/predictions/det-on-test/samples/{data_id}", limit=500)
            assert rows["task"] == "detection" and all(len(r["bbox"]) == 4 and r["score"] is not None for r in rows["items"])
            assert [r["score"] for r in rows["items"]] == sorted((r["score"] for r in rows["items"]), reverse=True)
            assert shown == min(rows["total"], 10)  # the ten best boxes, dashed, over the ground truth
            assert gt == sum(a["kind"] == "boxes" for a in samples[data_id]["annotations"])
            drawn += shown
        # the sample view: ground truth and the prediction's boxes side by side; the slider hides low-confidence boxes
        best = max(tiles, key=lambda t: t[3])[0]
        page.goto(f"{det_world.base}/#/data/{pred['data']}")
        page.wait_for_function("() => document.getElementById('samples')?.dataset.state === 'ready' && window.vemlPending === 0")
        page.click(f"#samples .tile[data-id='{best}']")
        page.wait_for_function("() => document.getElementById('detail')?.dataset.state === 'ready' && window.vemlPending === 0")
        rows = det_world.get(f"/predictions/det-on-test/samples/{best}", limit=500)["items"]
        panel = f"#panels .panel[data-source='prediction:{pred['id']}']"
        assert int(page.eval_on_selector(panel, "p => p.dataset.boxes")) == len(rows) == int(page.eval_on_selector(panel, "p => p.dataset.shown"))
        cut = sorted(r["score"] for r in rows)[len(rows) // 2]
        page.eval_on_selector("#conf", "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }", cut)
        cut = float(page.eval_on_selector("#conf", "s => s.value"))  # the slider's own step
        assert int(page.eval_on_selector(panel, "p => p.dataset.shown")) == sum(r["score"] >= cut for r in rows)
        assert page.locator(f"{panel} g.box:visible").count() == sum(r["score"] >= cut for r in rows)
        gt = page.eval_on_selector("#panels .panel[data-source=ground-truth]", "p => [Number(p.dataset.boxes), Number(p.dataset.shown)]")
        assert gt[0] == gt[1] == samples[best]["annotations"].__len__() - sum(a["kind"] != "boxes" for a in samples[best]["annotations"])
        page.screenshot(path=str(ui.shots_tmp / "sample-detection.png"), full_page=True)
        if os.environ.get("VEML_UPDATE_SCREENSHOTS"):
            with Image.open(ui.shots_tmp / "sample-detection.png") as im:
                im.convert("RGB").quantize(256).save(SHOTS / "sample-detection.png", optimize=True)
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.getElementById('detail')")
        assert problems == []
        page.screenshot(path=str(ui.shots_tmp / "prediction-detection.png"), full_page=True)
        assert drawn > 0, "the detector predicted no box at all: nothing dashed was drawn"
    finally:
        context.close()


def test_detection_prediction_analysis_matches_the_api(ui, det_world):
    """Per-class PR curves and AP50 (the version's stored ap50), TP/FP/FN per class whose FP/FN cells open their
    images, and every image sortable by errors or confidence; a row opens the sample view."""
    pred = det_world.get("/predictions/det-on-test")
    curves = det_world.get("/predictions/det-on-test/curves")
    assert curves["task"] == "detection" and curves["iou"] == 0.5
    stored = pred["metrics"]["per_class"]
    assert {c["class"]: c["ap"] for c in curves["curves"]} == pytest.approx({k: v["ap50"] for k, v in stored.items()})
    assert {c["class"]: c["positives"] for c in curves["curves"]} == {k: v["gt"] for k, v in stored.items()}
    for params, status, says in [({"class": "bus"}, 400, "unknown class 'bus'"), ({"sort": "loss"}, 400, "sort must be one of errors"),
                                 ({"error": "tp"}, 422, "error"), ({"threshold": "1.5"}, 422, "threshold")]:
        r = det_world.http.get("/predictions/det-on-test/outcomes", params=params)
        assert r.status_code == status and says in r.json()["error"], (params, r.text)
    context, page, problems = _watched_page(ui)
    try:
        ready = "() => document.getElementById('outcomes')?.dataset.state === 'ready' && window.vemlPending === 0"
        page.goto(f"{det_world.base}/#/prediction/{pred['id']}")
        page.wait_for_function(ready)
        pr = [c for c in page.evaluate("() => window.vemlCharts()") if c["name"] == "pr"]
        assert len(pr) == 1
        assert [[p["x"] for p in d["data"]] for d in pr[0]["datasets"]] == [c["recall"] for c in curves["curves"]]
        assert [[p["y"] for p in d["data"]] for d in pr[0]["datasets"]] == [c["precision"] for c in curves["curves"]]
        assert [float(x) if x else None for x in page.eval_on_selector_all("#ap [data-key=ap]", "els => els.map(e => e.dataset.value)")] == [c["ap"] for c in curves["curves"]]
        every = det_world.get("/predictions/det-on-test/outcomes", limit=500)
        assert every["sort"] == "errors" and every["total"] == pred["samples"]
        rows = lambda: page.eval_on_selector_all("#outcomes tbody tr", "rs => rs.map(r => [Number(r.dataset.id), ...['tp', 'fp', 'fn'].map(k => Number(r.querySelector(`[data-key=${k}]`).dataset.value))])")  # noqa: E731
        assert rows() == [[i["data_id"], i["tp"], i["fp"], i["fn"]] for i in every["items"]]
        assert [i["errors"] for i in every["items"]] == sorted((i["errors"] for i in every["items"]), reverse=True)
        # at the default threshold the per-image errors are the ones the stored worst list counts
        worst = {w["data_id"]: (w["false_positives"], w["missed"]) for w in pred["worst"]}
        assert {i["data_id"]: (i["fp"], i["fn"]) for i in every["items"] if i["errors"]} == worst
        counts = page.eval_on_selector_all("#det-errors tbody tr", "rs => rs.map(r => [r.dataset.class, ...['tp', 'fp', 'fn'].map(k => Number(r.querySelector(`td[data-key=${k}] .v`).dataset.value))])")
        assert counts == [[c, n["tp"], n["fp"], n["fn"]] for c, n in every["per_class"].items()]
        # a class's false-positive cell opens the images behind it
        cls, kind = next((c, k) for k in ("fp", "fn") for c, n in every["per_class"].items() if n[k])
        page.click(f"#det-errors tr[data-class='{cls}'] td[data-key={kind}] a")
        routed = f"#/prediction/{pred['id']}?class={cls}&error={kind}"
        page.wait_for_function("(h) => { const m = document.getElementById('main'); return m.dataset.route === h && m.dataset.state === 'ready'"
                               " && document.getElementById('outcomes')?.dataset.state === 'ready' && window.vemlPending === 0; }", arg=routed)
        cell = det_world.get("/predictions/det-on-test/outcomes", **{"class": cls, "error": kind, "limit": 500})
        assert cell["total"] == every["per_class"][cls][f"{kind}_images"] > 0
        assert [r[0] for r in rows()] == [i["data_id"] for i in cell["items"]]
        page.select_option("#outcome-sort", "confidence")
        page.wait_for_function(f"() => location.hash.includes('sort=confidence') && ({ready[6:]})")
        by_conf = det_world.get("/predictions/det-on-test/outcomes", **{"class": cls, "error": kind, "sort": "confidence", "limit": 500})["items"]
        assert [r[0] for r in rows()] == [i["data_id"] for i in by_conf]
        page.screenshot(path=str(ui.shots_tmp / "prediction-analysis-detection.png"), full_page=True)
        if os.environ.get("VEML_UPDATE_SCREENSHOTS"):
            with Image.open(ui.shots_tmp / "prediction-analysis-detection.png") as im:
                im.convert("RGB").quantize(256).save(SHOTS / "prediction-analysis-detection.png", optimize=True)
        page.focus("#outcomes")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.getElementById('detail')?.dataset.state === 'ready' && window.vemlPending === 0")
        assert int(page.eval_on_selector("#detail", "d => d.dataset.id")) == by_conf[0]["data_id"]
        assert page.locator(f"#panels .panel[data-source='prediction:{pred['id']}']").count() == 1
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.getElementById('detail')")
        assert problems == []
    finally:
        context.close()
