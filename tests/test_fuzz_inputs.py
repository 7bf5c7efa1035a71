"""The fuzz stage (issue 13, point 10): generated hostile input through the CLI's own parsers.

Hypothesis generates COCO annotation files, CSV and Parquet tables, YAML model configs, filter
expressions, YOLO label sets, Pascal VOC XML, BDD100K JSON and MLflow tracking URIs -- a mix of
well-formed documents, near-misses and junk -- and feeds each through the real CLI, in process (``veml
data import coco|table|yolo|voc|bdd``, ``veml model add``, ``veml data filter``, ``veml import mlflow``),
so every case takes the path a user's file takes.  The SDK's half calls ``start_run``/``log_*``/``set_tag``
with hostile names and values (NaN, huge integers, 7000-character strings, lone surrogates, non-mappings):
each call takes its values or raises one one-line VemlError and changes nothing.  Every answer must be a success (exit 0) or one clean refusal:
exit 1, exactly one ``error:`` line, no traceback, no "internal error", and the repository's version
list unchanged.  The REST half of the stage is ``test_api_fuzz.py`` (schemathesis, stateless and
stateful).  How many cases ran is printed at the end of the pytest run (``fuzz stage:`` lines).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import string
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import record_fuzz_cases, run_cli

EXAMPLES = int(os.environ.get("VEML_FUZZ_EXAMPLES", 40))  # more for a long local run (400 found the bugs fixed here)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
_names = itertools.count()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_inputs")
    root = base / "repo"
    assert run_cli("init", root).code == 0
    images = base / "images"
    images.mkdir()
    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (32, 24), colour).save(images / f"img{i}.png")
    (images / "sub").mkdir()
    Image.new("RGB", (16, 16), "white").save(images / "sub" / "deep.png")
    csv = base / "seed.csv"
    csv.write_text("a,b,y\n1,2.5,yes\n2,3.5,no\n3,4.5,yes\n")
    assert run_cli("--repo", root, "data", "import", "table", csv, "--name", "rows", "--label", "y").code == 0
    good = {"images": [{"id": i + 1, "file_name": f"img{i}.png", "width": 32, "height": 24} for i in range(3)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "car"}]}
    (base / "good.json").write_text(json.dumps(good))
    assert run_cli("--repo", root, "data", "import", "coco", base / "good.json", "--images", images,
                   "--name", "boxes").code == 0
    return {"root": root, "base": base, "images": images, "counts": {}}


def _versions(root: Path) -> list:
    res = run_cli("--repo", root, "data", "list", "--json")
    assert res.code == 0, res.err
    models = run_cli("--repo", root, "model", "list", "--json")
    assert models.code == 0, models.err
    return [res.json, models.json]


def _check(world, kind: str, *args) -> None:
    """Run one case; a refusal must be clean and change nothing."""
    root = world["root"]
    before = _versions(root)
    res = run_cli("--repo", root, *args, "--json")
    world["counts"][kind] = world["counts"].get(kind, 0) + 1
    assert res.code in (0, 1), (args, res.code, res.err)
    assert "Traceback" not in res.err and "internal error" not in res.err, (args, res.err)
    if res.code == 1:
        lines = res.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.err)
        assert res.out == ""
        assert _versions(root) == before, (args, "a refused command changed the repository")


@pytest.fixture(scope="module", autouse=True)
def _report(world, request):
    yield
    record_fuzz_cases(request.config, "inputs", world["counts"])


# --- strategies ---------------------------------------------------------------------------------
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
file_names = st.sampled_from(["img0.png", "img1.png", "img2.png", "sub/deep.png", "missing.png", "../img0.png",
                              "/etc/passwd", "sub/../img1.png", "", ".", "sub", "img0.png\x00x", "IMG0.PNG"]) | st.text(max_size=10)
numbers = st.integers(-5, 40) | st.floats(-1e3, 1e3) | st.sampled_from([float("nan"), float("inf"), 1e308, -0.0])


@st.composite
def coco_documents(draw):
    n = draw(st.integers(0, 4))
    images = [{"id": draw(st.integers(-1, 5) | junk), "file_name": draw(file_names),
               "width": draw(numbers | junk), "height": draw(numbers | junk),
               **draw(st.dictionaries(st.sampled_from(["weather", "time", "extra"]), junk, max_size=2))}
              for _ in range(n)]
    cats = draw(st.lists(st.fixed_dictionaries({"id": st.integers(0, 3) | junk,
                                                "name": st.sampled_from(["car", "person", "", "car "]) | junk}),
                         max_size=3))
    anns = draw(st.lists(st.fixed_dictionaries({
        "id": st.integers(0, 9) | junk, "image_id": st.integers(-1, 5) | junk, "category_id": st.integers(0, 3) | junk,
        "bbox": st.lists(numbers, min_size=0, max_size=5) | junk, "area": numbers | junk,
        "iscrowd": st.sampled_from([0, 1, 2]) | junk}), max_size=4))
    doc: dict = {"images": images, "annotations": anns, "categories": cats}
    for key in draw(st.lists(st.sampled_from(list(doc)), max_size=2, unique=True)):
        doc[key] = draw(junk)  # a whole section replaced by junk
    return doc


cells = (st.integers(-10, 10).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
         | st.sampled_from(["", "nan", "inf", "1+2j", "yes", "no", '"q,uoted"', "NULL", "\u00e9t\u00e9", "1e400"])
         | st.text(alphabet=string.printable, max_size=6))
headers = st.sampled_from(["a", "b", "y", "", "a", "x y", '"q"', "data_id", "meta", "\u6e29\u5ea6", "SELECT"]) | st.text(max_size=5)


@st.composite
def csv_texts(draw):
    cols = draw(st.lists(headers, min_size=0, max_size=4))
    rows = draw(st.lists(st.lists(cells, min_size=len(cols), max_size=len(cols) + 1), max_size=5))
    sep = draw(st.sampled_from([",", ",", ";"]))
    return "\n".join(sep.join(r) for r in [cols, *rows]) + draw(st.sampled_from(["", "\n", "\n\n"]))


arrow_columns = st.sampled_from([
    pa.array([1, 2, 3]), pa.array([1.5, None, float("nan")]), pa.array(["a", None, "c"]),
    pa.array([True, False, None]), pa.array([None, None, None], pa.null()), pa.array([[1], [], None]),
    pa.array([{"u": 1}, {"u": 2}, None]), pa.array([b"x", b"y", b"z"]),
    pa.array([1, 2, 3], pa.timestamp("ms")), pa.array([2**62, -(2**62), 0]), pa.array(["inf", "1+2j", ""]),
])


@st.composite
def parquet_tables(draw):
    cols = draw(st.lists(arrow_columns, max_size=4))
    names = draw(st.lists(headers, min_size=len(cols), max_size=len(cols)))
    return pa.Table.from_arrays(cols, names=names) if cols else pa.table({})


config_keys = st.sampled_from(["adapter", "task", "architecture", "backbone", "neck", "head", "parameters",
                               "name", "pretrained", "num_classes"])
config_values = st.sampled_from(["torch", "sklearn", "classification", "detection", "tabular-classification",
                                 "resnet18", "random_forest", "mobilenet_v3", "faster_rcnn", "", "architecture:x"]) | junk


@st.composite
def yaml_configs(draw):
    kind = draw(st.sampled_from(["dict", "dict", "raw", "alias"]))
    if kind == "raw":
        return draw(st.text(alphabet=string.printable, max_size=60))
    if kind == "alias":
        depth = draw(st.integers(1, 9))
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, depth)]
        return "\n".join(lines) + "\nadapter: torch\n"
    doc = draw(st.dictionaries(config_keys, config_values, max_size=6))
    if draw(st.booleans()):
        doc["parameters"] = draw(st.dictionaries(st.sampled_from(["lr", "epochs", "batch_size", "n_estimators", "C"]),
                                                 numbers | junk, max_size=3))
    return yaml.safe_dump(doc, allow_unicode=True)


columns = st.sampled_from(["data_id", "width", "height", "file_name", "category", "area", "label", "a", "b", "y",
                           "format", "nope", '"width"', "ann_kind"])
literals = (st.integers(-5, 100).map(str) | st.sampled_from(["'car'", "'x''y'", "NULL", "TRUE", "1.5e3", "'%a%'", "''"]))
ops = st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "AND", "OR", "LIKE", "||"])
hostile = st.sampled_from(["(SELECT 1)", "read_csv('/etc/passwd')", "getenv('HOME')", "1; DROP TABLE s",
                           "range(10)", "* ", "current_setting('threads')", "lower(", ")", "'unterminated",
                           "ATTACH 'x' AS y", "PRAGMA version", "glob('*')", "x'00'", "$1", "?", "--", "/*"])


@st.composite
def filter_expressions(draw):
    parts = [draw(columns | literals)]
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(ops))
        parts.append(draw(columns | literals | hostile))
    expr = " ".join(parts)
    wrap = draw(st.sampled_from(["{}", "NOT ({})", "({}) IS NULL", "lower(CAST({} AS VARCHAR)) = 'x'",
                                 "{} BETWEEN 1 AND 9", "{} IN (1, 'a', NULL)", "abs({}) > 1"]))
    return wrap.format(expr)


# --- the cases ------------------------------------------------------------------------------------
@given(doc=coco_documents())
@SETTINGS
def test_fuzz_coco_import(world, doc):
    path = world["base"] / "fuzz.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    _check(world, "coco", "data", "import", "coco", path, "--images", world["images"], "--name", f"coco-{next(_names)}")


@given(raw=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
@SETTINGS
def test_fuzz_coco_bytes(world, raw):
    path = world["base"] / "raw.json"
    path.write_bytes(raw)
    _check(world, "coco", "data", "import", "coco", path, "--images", world["images"], "--name", f"raw-{next(_names)}")


@given(text=csv_texts(), label=st.none() | headers)
@SETTINGS
def test_fuzz_csv_import(world, text, label):
    path = world["base"] / "fuzz.csv"
    path.write_text(text)
    extra = [] if label is None else ["--label", label]
    _check(world, "csv", "data", "import", "table", path, "--name", f"csv-{next(_names)}", *extra)


@given(table=parquet_tables(), label=st.none() | headers)
@SETTINGS
def test_fuzz_parquet_import(world, table, label):
    path = world["base"] / "fuzz.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path.write_bytes(buf.getvalue())
    extra = [] if label is None else ["--label", label]
    _check(world, "parquet", "data", "import", "table", path, "--name", f"pq-{next(_names)}", *extra)


@given(text=yaml_configs())
@SETTINGS
def test_fuzz_model_config(world, text):
    path = world["base"] / "config.yaml"
    path.write_text(text)
    _check(world, "yaml", "model", "add", "--name", f"m-{next(_names)}", "--config", path)


@given(expr=filter_expressions(), source=st.sampled_from(["boxes", "rows"]))
@SETTINGS
def test_fuzz_filter_expression(world, expr, source):
    _check(world, "filter", "data", "filter", source, "--where", expr, "--name", f"f-{next(_names)}")


# --- detection label files: YOLO, Pascal VOC, BDD100K ----------------------------------------------
LABEL_EXAMPLES = settings(SETTINGS, max_examples=EXAMPLES * 5 // 8)
label_lines = st.lists(numbers.map(str) | st.sampled_from(["0", "1", "-1", "2", "0.5", "1e400", "nan", "x", ""]),
                       min_size=0, max_size=6).map(" ".join) | st.text(alphabet=string.printable, max_size=20)
split_entries = st.sampled_from(["images", "images/", "../images", "/etc", "list.txt", "missing", "", "images\x00x"]) | junk


def _fresh(world, kind: str) -> Path:
    folder = world["base"] / f"{kind}-{next(_names)}"
    folder.mkdir()
    return folder


@st.composite
def yolo_sets(draw):
    labels = "\n".join(draw(st.lists(label_lines, max_size=4)))
    form = draw(st.sampled_from(["list", "map", "classes.txt", "junk", "none"]))
    names = draw(st.lists(st.sampled_from(["car", "person", "", "car"]) | st.text(max_size=5), max_size=3))
    yaml_text = {"list": yaml.safe_dump({"names": names, **({"train": draw(split_entries)} if draw(st.booleans()) else {})},
                                        allow_unicode=True),
                 "map": yaml.safe_dump({"names": {draw(st.integers(-1, 3) | st.text(max_size=3)): n for n in names}}),
                 "junk": draw(st.text(alphabet=string.printable, max_size=40)), "classes.txt": None, "none": None}[form]
    return labels, form, names, yaml_text


@given(case=yolo_sets())
@LABEL_EXAMPLES
def test_fuzz_yolo_labels(world, case):
    labels, form, names, yaml_text = case
    root = _fresh(world, "yolo")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "images" / "img0.png").write_bytes((world["images"] / "img0.png").read_bytes())
    (root / "labels" / "img0.txt").write_text(labels)
    (root / "list.txt").write_text("images/img0.png\n../../etc/passwd\n")
    if yaml_text is not None:
        (root / "data.yaml").write_text(yaml_text)
    elif form == "classes.txt":
        (root / "classes.txt").write_text("\n".join(names))
    _check(world, "yolo", "data", "import", "yolo", root, "--name", f"yolo-{next(_names)}")


@st.composite
def voc_documents(draw):
    form = draw(st.sampled_from(["doc", "doc", "doc", "bomb", "junk"]))
    if form == "bomb":
        return ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "bbbbbbbbbb"><!ENTITY c "&b;&b;&b;&b;&b;&b;">]>'
                "<annotation><filename>&c;</filename></annotation>")
    if form == "junk":
        return draw(st.text(alphabet=string.printable, max_size=60))
    tag = lambda name, value: "" if value is None else f"<{name}>{value}</{name}>"  # noqa: E731
    text = st.none() | numbers.map(str) | st.sampled_from(["", "abc", "&amp;", "<x/>"])
    objects = "".join(
        "<object>" + tag("name", draw(st.none() | st.sampled_from(["car", "", "person"]) | st.text(alphabet=string.ascii_letters, max_size=4)))
        + "<bndbox>" + "".join(tag(k, draw(text)) for k in ("xmin", "ymin", "xmax", "ymax")) + "</bndbox></object>"
        for _ in range(draw(st.integers(0, 3))))
    size = "<size>" + tag("width", draw(text)) + tag("height", draw(text)) + "</size>"
    name = draw(file_names).replace("&", "&amp;").replace("<", "&lt;")
    return f"<annotation>{tag('filename', name)}{size if draw(st.booleans()) else ''}{objects}</annotation>"


@given(doc=voc_documents())
@LABEL_EXAMPLES
def test_fuzz_voc_labels(world, doc):
    root = _fresh(world, "voc")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    (root / "JPEGImages" / "img0.png").write_bytes((world["images"] / "img0.png").read_bytes())
    (root / "Annotations" / "img0.xml").write_text(doc, errors="surrogatepass")
    _check(world, "voc", "data", "import", "voc", root, "--name", f"voc-{next(_names)}")


@st.composite
def bdd_documents(draw):
    box = st.fixed_dictionaries({k: numbers | junk for k in ("x1", "y1", "x2", "y2")}) | junk
    label = st.fixed_dictionaries({"category": st.sampled_from(["car", "", "lane"]) | junk},
                                  optional={"box2d": box, "poly2d": junk, "attributes": junk})
    frame = st.fixed_dictionaries({"name": file_names | junk},
                                  optional={"labels": st.lists(label, max_size=3) | junk,
                                            "attributes": st.dictionaries(st.sampled_from(["weather", "scene", "x"]), junk, max_size=2) | junk})
    frames = draw(st.lists(frame, max_size=3))
    return draw(st.sampled_from(["list", "frames", "junk"])), frames, draw(junk)


@given(case=bdd_documents())
@LABEL_EXAMPLES
def test_fuzz_bdd_labels(world, case):
    form, frames, other = case
    doc = {"list": frames, "frames": {"frames": frames}, "junk": other}[form]
    path = world["base"] / "bdd.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    _check(world, "bdd", "data", "import", "bdd", path, "--images", world["images"], "--name", f"bdd-{next(_names)}")


# --- the MLflow tracking URI check (veml import mlflow) -------------------------------------------
@st.composite
def tracking_uris(draw, world):
    scheme = draw(st.sampled_from(["", "file:", "file://", "file:///", "FILE:///", "file://otherhost/", "sqlite:", "sqlite://",
                                   "sqlite:///", "sqlite:////", "sqlite:///?", "postgresql://", "postgres://",
                                   "postgresql+psycopg://", "mysql://", "mssql://", "https://", "http://", "s3://",
                                   "databricks://", "ftp://"]))
    host = draw(st.sampled_from(["", "127.0.0.1:1", "user:s3cret-pw@127.0.0.1:1", "[::1", "host:notaport", "%00", "@"]))
    base = str(world["base"])
    path = draw(st.sampled_from([f"{base}/nothing-here", base, f"{base}/seed.csv", "/etc/passwd", "../x", "~", "db",
                                 f"{world['root']}/.veml/meta.db", "/", "?x=1"]) | st.text(max_size=12))
    return scheme + host + ("/" if host and not path.startswith("/") else "") + path


@given(data=st.data())
@SETTINGS
def test_fuzz_mlflow_tracking_uri(world, data):
    """The check before mlflow's client is opened: every URI is refused cleanly or names a store; a password
    in it never shows in a label or a message.  A tracking server (http) is only parsed: the client would
    retry an unreachable one for minutes."""
    from veml.errors import VemlError
    from veml.interop import mlflow_store

    uri = data.draw(tracking_uris(world))
    try:
        secret = urlsplit(uri.strip()).password == "s3cret-pw"  # a credential, not a folder named so
    except ValueError:
        secret = False
    try:
        store = mlflow_store.parse(uri)
    except VemlError as exc:
        assert "\n" not in str(exc) and not (secret and "s3cret-pw" in str(exc)), (uri, exc)
        store = None
    if store is not None:
        assert not (secret and "s3cret-pw" in store.label), (uri, store.label)
        if store.kind == "http":
            world["counts"]["mlflow-uri"] = world["counts"].get("mlflow-uri", 0) + 1
            return
    _check(world, "mlflow-uri", "import", "mlflow", uri)
    assert not (secret and "s3cret-pw" in run_cli("--repo", world["root"], "import", "mlflow", uri).err), uri


# --- the SDK: parameter, tag and metric names and values -------------------------------------------
sdk_keys = st.sampled_from(["lr", "loss", "a b", "\u00fcber", "x" * 64, "x" * 65, "", " ", "a\x00b", "a\nb", "../etc",
                            "system/cpu", "\ud800", 7, None, ("t",)]) | st.text(max_size=8)
sdk_values = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2**70, 2**70) | st.text(max_size=10)
              | st.sampled_from([None, True, "x" * 7000, [1, "a", None], [object()], {"d": 1}, b"bytes", object(),
                                 10**5000, "\ud800", "1.5", "nan"]))
sdk_steps = st.none() | st.integers(-2**64, 2**64) | st.sampled_from([1.5, "3", True, 2**62 + 1])
sdk_calls = st.one_of(
    st.tuples(st.just("param"), sdk_keys, sdk_values),
    st.tuples(st.just("params"), st.dictionaries(sdk_keys, sdk_values, max_size=3) | st.sampled_from([[("a", 1)], "lr=1", 5])),
    st.tuples(st.just("tag"), sdk_keys, sdk_values),
    st.tuples(st.just("metric"), sdk_keys, sdk_values, sdk_steps),
    st.tuples(st.just("metrics"), st.dictionaries(sdk_keys, sdk_values, max_size=3) | st.sampled_from([[1.0], None]), sdk_steps),
)


plain_params = st.dictionaries(st.sampled_from(["lr", "batch"]), st.integers(0, 9) | st.floats(0, 1), max_size=2)


@given(params=st.one_of(plain_params, plain_params, plain_params, st.dictionaries(sdk_keys, sdk_values, max_size=2),
                        st.sampled_from([["lr"], "lr"])),
       calls=st.lists(sdk_calls, min_size=1, max_size=6))
@settings(SETTINGS, max_examples=EXAMPLES // 2)
def test_fuzz_sdk_names_and_values(world, params, calls):
    """Whatever a script logs, each call takes it or refuses it with one VemlError (one line) and changes
    nothing: what the run records at its end is exactly what was taken."""
    import warnings

    import veml
    from veml.errors import VemlError

    world["counts"]["sdk"] = world["counts"].get("sdk", 0) + 1
    with veml.open(world["root"]) as repo, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a NaN metric is warned about, and skipped
        try:
            run = repo.start_run(name=f"sdk-{next(_names)}", params=params, system_metrics_s=0)
        except VemlError as exc:
            assert "\n" not in str(exc), exc
            return
        taken_params, taken_tags = dict(run.info.params), {}
        for call in calls:
            op, *args = call
            world["counts"]["sdk-call"] = world["counts"].get("sdk-call", 0) + 1
            try:
                if op == "param":
                    run.log_param(*args)
                elif op == "params":
                    run.log_params(*args)
                elif op == "tag":
                    run.set_tag(*args)
                elif op == "metric":
                    run.log_metric(args[0], args[1], step=args[2])
                else:
                    run.log_metrics(args[0], step=args[1])
            except VemlError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 1000, (call, exc)
                continue
            if op == "param":
                taken_params[args[0]] = args[1]
            elif op == "params":
                taken_params.update(args[0])
            elif op == "tag":
                taken_tags[args[0]] = str(args[1])
        info = run.end()
    assert info.status == "finished"
    assert set(info.params) == set(taken_params) and dict(info.tags) == taken_tags
