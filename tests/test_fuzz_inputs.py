"""The fuzz stage (issue 13, point 10): generated hostile input through the CLI's own parsers.

Hypothesis generates COCO annotation files, CSV and Parquet tables, YAML model configs and filter
expressions -- a mix of well-formed documents, near-misses and junk -- and feeds each through the real
CLI, in process (``veml data import coco|table``, ``veml model add``, ``veml data filter``), so every
case takes the path a user's file takes.  Every answer must be a success (exit 0) or one clean refusal:
exit 1, exactly one ``error:`` line, no traceback, no "internal error", and the repository's version
list unchanged.  The REST half of the stage is ``test_api_fuzz.py`` (schemathesis, stateless and
stateful).  How many cases ran is printed at the end of the pytest run (``fuzz stage:`` lines).
"""

from __future__ import annotations

import io
import itertools
import json
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import record_fuzz_cases, run_cli

EXAMPLES = 40
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
