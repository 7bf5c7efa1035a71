#!/usr/bin/env python
"""A bounded load test of the REST API (issue 6, reliability checks) on loopback.

A repository is built from generated driving scenes (``--images`` 64x64 PNGs over four domains,
imported as four data versions, merged, filtered) plus, unless ``--no-lifecycle``, one tiny
lifecycle (efficientnet_lite0, frozen ImageNet backbone, 2 training steps, ONNX deployment, one
prediction version).  Then ``veml``'s server runs in its own process (``build_server`` on a free
loopback port, one uvicorn worker, as ``veml serve`` runs it), and for ``--seconds``:

* ``--clients`` reader threads, each with its own ``httpx.Client`` (keep-alive), loop over a
  weighted mix of reads: version lists (random kind filter and offset), version details (any
  version, including the ones the writer just created), lineage (up / down / both), data
  statistics, sample pages, thumbnails (``?thumbnail=64``), lifecycles, training runs and
  prediction versions;
* one writer creates a version every ``--write-every`` seconds through the API, alternating
  ``POST /data/{ref}/filter`` and ``POST /data/merge`` (over base and earlier created versions).

Checked: no errors (any non-2xx answer or exception, readers and writer), and no lost versions:
every version the writer got a 201 for is there at the end (through the API, and again through
``veml.open`` after the server stopped) and the total number of versions equals the count before
plus the number created.  Reported: requests/s and p50 / p99 / max latency per endpoint and
overall, the writer's latencies, and the 1-minute load average.

Clients and server share this machine's cores (the clients are one Python process, so their own
GIL and request building add to the latencies they measure); every figure is loopback, warm-cache.

    .venv/bin/python benchmarks/bench_api_load.py                  # 20 clients, 30 s, 320 images
    .venv/bin/python benchmarks/bench_api_load.py --quick          # 5 clients, 5 s

Results: ``OUT/api_load.json`` and ``OUT/api_load.md`` (also printed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, machine_info, machine_line, md_table, ms, percentile, publish, verdict  # noqa: E402

import httpx  # noqa: E402

import veml  # noqa: E402
from veml.datasets import Domain, generate_driving_coco  # noqa: E402

DOMAINS = [("day-ams", Domain(city="amsterdam", time_of_day="day", weather="clear")),
           ("night-tokyo", Domain(city="tokyo", time_of_day="night", weather="rain")),
           ("day-phoenix", Domain(city="phoenix", time_of_day="day", weather="clear")),
           ("dusk-mumbai", Domain(city="mumbai", time_of_day="dusk", weather="fog"))]
WHERES = ["category = 'car'", "category = 'pedestrian'", "category = 'sign'", "category <> 'sign'"]
CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "efficientnet_lite0",
              "parameters": {"pretrained": True, "freeze_backbone": True, "label_column": "time_of_day", "image_size": 64}}
# endpoint -> weight in the readers' mix
MIX = {"GET /versions": 3, "GET /versions/{ref}": 4, "GET /lineage/{ref}": 2, "GET /data/{ref}/stats": 1,
       "GET /data/{ref}/samples": 3, "GET /data/{ref}/samples/{id}/image?thumbnail": 3, "GET /lifecycles": 1,
       "GET /training/{ref}": 1, "GET /predictions/{ref}": 1}
SERVER = """
import socket, sys
from veml.server.main import build_server
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
print(sock.getsockname()[1], flush=True)
build_server(sys.argv[1], "127.0.0.1", 0, log_level="warning").run(sockets=[sock])  # SIGTERM: graceful stop
"""


# --- the repository ------------------------------------------------------------------------------
def build_repo(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    repo = veml.init(work / "repo")
    per = max(4, a.images // len(DOMAINS))
    base: list[str] = []
    for k, (name, dom) in enumerate(DOMAINS):
        ann = generate_driving_coco(work / "gen" / name, per, seed=a.seed + k, domain=dom, file_prefix=name,
                                    image_id_start=1 + k * per)
        repo.data.import_("coco", ann, name, images=ann.parent / "images", role="test" if k == 3 else "train")
        base.append(name)
    repo.data.merge(base[:3], "train")
    repo.data.merge(["train", base[3]], "all")
    repo.data.filter("all", "category = 'car'", "all-cars")
    data = base + ["train", "all", "all-cars"]
    life: dict[str, Any] = {}
    if a.lifecycle:
        repo.models.add("clf", CLASSIFIER)
        repo.training.train("train", "clf", sets=["max_steps=2", "batch_size=8"], test=base[3], name="clf-run")
        repo.inference.deploy("clf-run", name="clf-onnx")
        repo.inference.predict("clf-onnx", base[3], name="clf-on-dusk")
        life = {"training": ["clf-run"], "prediction": ["clf-on-dusk"]}
    built = repo.stores.graph.count(None)
    repo.close()
    return {"root": work / "repo", "data": data, "per_domain": per, "versions_built": built, **life}


class Server:
    """``build_server`` in a child process (so clients and server do not share a GIL)."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.isdigit():
            self.proc.kill()
            raise SystemExit(f"server did not start (printed {line!r})")
        self.base_url = f"http://127.0.0.1:{int(line)}/api/v1"
        deadline = time.monotonic() + 120
        while True:  # the repository is opened after the port is printed
            try:
                if httpx.get(f"{self.base_url}/versions", params={"limit": 1}, timeout=60).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("server did not start")
            time.sleep(0.1)

    def stop(self) -> int | None:
        self.proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises it
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


# --- the load --------------------------------------------------------------------------------------
class Shared:
    def __init__(self, world: dict[str, Any], sample_ids: dict[str, list[int]], all_ids: list[int]) -> None:
        self.world = world
        self.sample_ids = sample_ids
        self.lock = threading.Lock()
        self.version_refs: list[str] = [str(i) for i in all_ids] + list(world["data"])
        self.data_refs: list[str] = list(world["data"])
        self.stop = threading.Event()
        self.errors: list[dict[str, Any]] = []

    def add_version(self, node: dict[str, Any]) -> None:
        with self.lock:
            self.version_refs.append(str(node["id"]))
            self.data_refs.append(node["name"])

    def pick(self, which: str) -> str:
        with self.lock:
            return random.choice(self.version_refs if which == "version" else self.data_refs)


def one_read(client: httpx.Client, sh: Shared, endpoint: str, rng: random.Random) -> httpx.Response:
    w = sh.world
    if endpoint == "GET /versions":
        params: list[tuple[str, Any]] = [("limit", rng.choice([10, 50, 200])), ("offset", rng.randrange(0, 40))]
        if rng.random() < 0.5:
            params.append(("kind", rng.choice(["data", "model", "training"])))
        return client.get("/versions", params=params)
    if endpoint == "GET /versions/{ref}":
        return client.get(f"/versions/{sh.pick('version')}")
    if endpoint == "GET /lineage/{ref}":
        return client.get(f"/lineage/{sh.pick('data')}", params={"direction": rng.choice(["up", "down", "both"])})
    if endpoint == "GET /data/{ref}/stats":
        return client.get(f"/data/{sh.pick('data')}/stats")
    if endpoint == "GET /data/{ref}/samples":
        return client.get(f"/data/{sh.pick('data')}/samples", params={"limit": 20, "offset": rng.randrange(0, w["per_domain"])})
    if endpoint == "GET /data/{ref}/samples/{id}/image?thumbnail":
        ref = rng.choice(list(sh.sample_ids))
        return client.get(f"/data/{ref}/samples/{rng.choice(sh.sample_ids[ref])}/image", params={"thumbnail": 64})
    if endpoint == "GET /lifecycles":
        return client.get("/lifecycles")
    if endpoint == "GET /training/{ref}":
        return client.get(f"/training/{rng.choice(w['training'])}")
    if endpoint == "GET /predictions/{ref}":
        return client.get(f"/predictions/{rng.choice(w['prediction'])}")
    raise AssertionError(endpoint)


def reader(base_url: str, sh: Shared, seed: int, endpoints: list[str], weights: list[int],
           out: list[tuple[str, float, float, bool]]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=120) as client:
        while not sh.stop.is_set():
            endpoint = rng.choices(endpoints, weights)[0]
            t0 = time.perf_counter()
            try:
                r = one_read(client, sh, endpoint, rng)
                good = 200 <= r.status_code < 300
                if not good:
                    sh.errors.append({"endpoint": endpoint, "url": str(r.request.url), "status": r.status_code, "body": r.text[:300]})
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                good = False
                sh.errors.append({"endpoint": endpoint, "exception": repr(exc)[:300]})
            t1 = time.perf_counter()
            out.append((endpoint, t0, t1 - t0, good))


def writer(base_url: str, sh: Shared, every: float, seed: int, out: list[tuple[str, float, float, bool]],
           created: list[dict[str, Any]]) -> None:
    rng = random.Random(seed)
    n = 0
    with httpx.Client(base_url=base_url, timeout=120) as client:
        nxt = time.perf_counter()
        while not sh.stop.is_set():
            n += 1
            name = f"load-{n:04d}"
            if n % 2:
                endpoint, path = "POST /data/{ref}/filter", f"/data/{sh.pick('data')}/filter"
                body: dict[str, Any] = {"where": rng.choice(WHERES), "name": name}
            else:
                endpoint, path = "POST /data/merge", "/data/merge"
                a_ref, b_ref = sh.pick("data"), sh.pick("data")
                while b_ref == a_ref:
                    b_ref = sh.pick("data")
                body = {"versions": [a_ref, b_ref], "name": name}
            t0 = time.perf_counter()
            try:
                r = client.post(path, json=body)
                good = r.status_code == 201
                if good:
                    node = r.json()
                    created.append(node)
                    sh.add_version(node)
                else:
                    sh.errors.append({"endpoint": endpoint, "body_sent": body, "status": r.status_code, "body": r.text[:300]})
            except Exception as exc:  # noqa: BLE001
                good = False
                sh.errors.append({"endpoint": endpoint, "body_sent": body, "exception": repr(exc)[:300]})
            t1 = time.perf_counter()
            out.append((endpoint, t0, t1 - t0, good))
            nxt += every
            sh.stop.wait(max(0.0, nxt - time.perf_counter()))


def all_versions(client: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get("/versions", params={"limit": 500, "offset": len(items)}).raise_for_status().json()
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def summarise(rows: list[tuple[str, float, float, bool]], seconds: float) -> dict[str, Any]:
    lat = [r[2] for r in rows]
    return {"requests": len(rows), "errors": sum(1 for r in rows if not r[3]), "rps": len(rows) / seconds,
            "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99), "max_s": max(lat) if lat else float("nan")}


def run_load(world: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    srv = Server(world["root"])
    try:
        with httpx.Client(base_url=srv.base_url, timeout=120) as c:
            before = all_versions(c)
            sample_ids = {}
            for ref in world["data"][:4] + ["all"]:
                page = c.get(f"/data/{ref}/samples", params={"limit": 500}).raise_for_status().json()
                sample_ids[ref] = [row["data_id"] for row in page["items"]]
        endpoints = [e for e in MIX if world.get("training") or e not in ("GET /training/{ref}", "GET /predictions/{ref}")]
        weights = [MIX[e] for e in endpoints]
        sh = Shared(world, sample_ids, [v["id"] for v in before])
        reads: list[list[tuple[str, float, float, bool]]] = [[] for _ in range(a.clients)]
        writes: list[tuple[str, float, float, bool]] = []
        created: list[dict[str, Any]] = []
        threads = [threading.Thread(target=reader, args=(srv.base_url, sh, a.seed * 1000 + k, endpoints, weights, reads[k]),
                                    daemon=True) for k in range(a.clients)]
        threads.append(threading.Thread(target=writer, args=(srv.base_url, sh, a.write_every, a.seed, writes, created),
                                        daemon=True))
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(a.seconds)
        sh.stop.set()
        for t in threads:
            t.join(180)
        elapsed = time.perf_counter() - t_start
        hung = sum(t.is_alive() for t in threads)
        with httpx.Client(base_url=srv.base_url, timeout=120) as c:
            after = all_versions(c)
            missing_api = [n["id"] for n in created if c.get(f"/versions/{n['id']}").status_code != 200]
    finally:
        server_rc = srv.stop()
    # and once more straight from the repository, after the server has gone
    repo = veml.open(world["root"])
    stored = {n.id: n.name for n in repo.stores.graph.list()}
    repo.close()
    missing_repo = [n["id"] for n in created if stored.get(n["id"]) != n["name"]]

    all_reads = [r for rs in reads for r in rs]
    by_endpoint: dict[str, list] = defaultdict(list)
    for r in all_reads + writes:
        by_endpoint[r[0]].append(r)
    ids_after = {v["id"] for v in after}
    return {
        "elapsed_s": elapsed, "clients": a.clients, "hung_threads": hung, "server_exit": server_rc,
        "versions_before": len(before), "versions_after": len(after), "created": len(created),
        "created_ids": [n["id"] for n in created], "missing_api": missing_api, "missing_repo": missing_repo,
        "unexpected_new": sorted(ids_after - {v["id"] for v in before} - {n["id"] for n in created}),
        "endpoints": {e: summarise(rs, elapsed) for e, rs in sorted(by_endpoint.items())},
        "reads": summarise(all_reads, elapsed), "writes": summarise(writes, elapsed),
        "overall": summarise(all_reads + writes, elapsed),
        "errors": sh.errors[:50], "error_count": len(sh.errors),
    }


# --- report ------------------------------------------------------------------------------------------
def render(R: dict[str, Any]) -> str:
    L, a, w = R["load_result"], R["args"], R["world"]
    no_errors = L["error_count"] == 0 and L["overall"]["errors"] == 0 and L["hung_threads"] == 0
    no_loss = (not L["missing_api"] and not L["missing_repo"] and not L["unexpected_new"]
               and L["versions_after"] == L["versions_before"] + L["created"])
    lines = [f"# REST API under load: {a['clients']} readers + 1 writer for {a['seconds']} s on loopback", "",
             machine_line(R["machine"]) + f", fastapi {R['versions']['fastapi']}, uvicorn {R['versions']['uvicorn']}, "
             f"httpx {R['versions']['httpx']}.",
             load_line(R["load"], R["machine"]["nproc"]), "",
             f"Repository: {w['per_domain'] * len(DOMAINS)} generated 64x64 PNG scenes in {len(DOMAINS)} imported data versions, "
             f"2 merges and a filter{', one tiny lifecycle (training, ONNX deployment, prediction)' if w.get('training') else ''}: "
             f"{w['versions_built']} versions before the run (built in {R['setup_s']:.1f} s). The server runs in its own process "
             f"(one uvicorn worker); the {a['clients']} reader threads (one keep-alive httpx client each) and the writer "
             f"(one POST every {a['write_every']} s, filter and merge alternately) are another process on the same cores.", "",
             f"- No errors (non-2xx or exceptions, readers and writer; no client hung): {verdict(no_errors)} — "
             f"{L['error_count']} errors in {L['overall']['requests']:,} requests.",
             f"- No lost versions: {verdict(no_loss)} — {L['versions_before']} before + {L['created']} created "
             f"(201) = {L['versions_after']} after; created but missing through the API: {len(L['missing_api'])}, "
             f"in the repository after the server stopped: {len(L['missing_repo'])}; unexpected new: {len(L['unexpected_new'])}.",
             ""]
    rows = []
    for e, s in L["endpoints"].items():
        rows.append([f"`{e}`", f"{s['requests']:,}", f"{s['rps']:.1f}", ms(s["p50_s"]), ms(s["p99_s"]), ms(s["max_s"]), s["errors"]])
    for label, key in (("**all reads**", "reads"), ("**writes**", "writes"), ("**overall**", "overall")):
        s = L[key]
        rows.append([label, f"{s['requests']:,}", f"{s['rps']:.1f}", ms(s["p50_s"]), ms(s["p99_s"]), ms(s["max_s"]), s["errors"]])
    lines += [md_table(["endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"], rows), ""]
    lines += [f"Measured over {L['elapsed_s']:.1f} s (the run plus the last in-flight requests). Latency is client-side "
              "wall time per request (nearest-rank percentiles); req/s is requests over that span."]
    if L["errors"]:
        lines += ["", "First errors:", ""] + [f"- `{e}`" for e in L["errors"][:10]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=None, help="generated images over the 4 domains (default 320; 80 with --quick)")
    p.add_argument("--clients", type=int, default=None, help="concurrent reader threads (default 20; 5 with --quick)")
    p.add_argument("--seconds", type=float, default=None, help="length of the load (default 30; 5 with --quick)")
    p.add_argument("--write-every", type=float, default=0.5, help="seconds between the writer's POSTs (default 0.5)")
    p.add_argument("--no-lifecycle", dest="lifecycle", action="store_false",
                   help="skip the tiny training/deployment/prediction (and the reads of them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 clients, 5 s")
    a = p.parse_args()
    q = a.quick
    a.images = a.images or (80 if q else 320)
    a.clients = a.clients or (5 if q else 20)
    a.seconds = a.seconds or (5.0 if q else 30.0)
    random.seed(a.seed)

    out = Path(a.out)
    work = out / "api_load_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    import fastapi
    import uvicorn

    R: dict[str, Any] = {"args": vars(a), "machine": machine_info(),
                         "versions": {"fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__, "httpx": httpx.__version__}}
    print(machine_line(R["machine"]), flush=True)
    with LoadSampler() as load:
        t0 = time.perf_counter()
        world = build_repo(work, a)
        R["setup_s"] = time.perf_counter() - t0
        print(f"repository: {world['versions_built']} versions in {R['setup_s']:.1f} s; "
              f"load: {a.clients} clients + 1 writer for {a.seconds} s", flush=True)
        R["load_result"] = run_load(world, a)
    R["load"] = load.summary()
    R["world"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in world.items()}
    publish(out, "api_load", R, render(R))
    L = R["load_result"]
    ok = (L["error_count"] == 0 and L["hung_threads"] == 0 and not L["missing_api"] and not L["missing_repo"]
          and L["versions_after"] == L["versions_before"] + L["created"])
    if not ok:
        sys.exit("api_load: errors or lost versions (see above)")


if __name__ == "__main__":
    main()
