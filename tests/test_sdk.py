"""The Python SDK (issue 16): training that runs outside VeML, logged the way MLflow's fluent API logs it.

One repository per module (handwritten digits as images, model version ``net``), runs logged from this
process and from real child processes (``sdk_worker.py``: one killed with SIGKILL, one in a git tree), read
back through the CLI a user would use (``veml train list/show/log``, ``veml lineage``, ``veml deploy``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import veml
from veml.entities import DataVersion, LoggedModel, ModelVersion, Run, TrainingVersion
from veml.errors import Conflict, InvalidInput, NotFound, RepositoryNotFound
from conftest import ok, overwrite_artifact
from test_registry import NET, digits_folder, snapshot

WORKER = str(Path(__file__).with_name("sdk_worker.py"))
# a failed write in the metric writer thread (or the system sampler) must fail the test, not just print
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sdk")
    root = base / "repo"
    ok("init", root)
    ok("data", "import", "images", digits_folder(base / "digits"), "--name", "digits", "--repo", root)
    (base / "net.yaml").write_text(NET)
    ok("model", "add", "--name", "net", "--config", base / "net.yaml", "--repo", root)
    return root


@pytest.fixture
def repo(root):
    with veml.open(root) as r:
        yield r


def worker(root: Path, mode: str, name: str, *extra: str, cwd: Path | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(veml.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, WORKER, str(root), mode, name, *extra], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err
    return proc


def test_a_run_is_a_training_version_like_any_other(repo, root, tmp_path):
    (tmp_path / "confusion.png").write_bytes(b"\x89PNG not really")
    with repo.start_run(name="r1", data="digits", model="net", params={"lr": 0.01}, system_metrics_s=0.05) as run:
        run.log_params({"batch": 32})
        run.set_tag("team", "perception")
        for step in range(1, 4):
            run.log_metric("loss", 1.0 / step, step=step)
        run.log_metrics({"val_acc": 0.91}, step=3)
        run.log_metric("lr_now", 0.5)  # no step: one past the metric's last (0, then 1)
        run.log_metric("lr_now", 0.25)
        art = run.log_artifact(tmp_path / "confusion.png")
        assert repo.training.status(repo.training.get("r1"))["status"] == "running"
        assert run.info.metrics["loss"] == pytest.approx(1 / 3)
        time.sleep(0.3)  # a few system samples
    info = repo.get_run("r1")
    assert isinstance(info, Run) and info.status == "finished" and info.error is None
    assert (info.data, info.model) == (repo.data.get("digits").id, repo.models.get("net").id)
    assert dict(info.params) == {"lr": 0.01, "batch": 32} and dict(info.tags) == {"team": "perception"}
    assert dict(info.metrics) == {"loss": pytest.approx(1 / 3), "val_acc": 0.91, "lr_now": 0.25}
    assert info.artifacts == (art,) and art.size_bytes == 15
    assert repo.stores.artifacts.get_verified(art.sha256, "artifact") == b"\x89PNG not really"
    assert info.pid == os.getpid() and info.python and info.packages["numpy"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = "failed"
    with pytest.raises(TypeError):
        info.params["lr"] = 1  # read-only
    # read back like a run veml train made: list, show, log, lineage, the UI's logs endpoint rows
    shown = ok("train", "show", "r1", "--repo", root)
    assert shown["status"] == "finished" and shown["params"] == {"lr": 0.01, "batch": 32}
    assert shown["run"]["tags"] == {"team": "perception"} and shown["run"]["source"] == "sdk"
    assert "r1" in [t["name"] for t in ok("train", "list", "--repo", root)]
    rows = ok("train", "log", "r1", "--repo", root)["logs"]
    assert [(r["step"], r["value"]) for r in rows if r["key"] == "loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [r["step"] for r in rows if r["key"] == "lr_now"] == [0, 1]
    system = {r["key"] for r in rows if r["key"].startswith("system/")}
    assert {"system/cpu_percent", "system/memory_used_mb", "system/process_rss_mb"} <= system
    lineage = ok("lineage", "r1", "--repo", root)
    kinds = {(e["src"], e["kind"]) for e in lineage["edges"] if e["dst"] == info.id}
    assert kinds == {(info.data, "DATA_TRAINING"), (info.model, "MODEL_TRAINING")}
    # the typed entities of the versions it links
    assert isinstance(repo.version("digits"), DataVersion) and repo.version("digits").classes == ("digit0", "digit1", "digit2")
    assert isinstance(repo.version("net"), ModelVersion) and repo.version("net").architecture == "resnet18"
    tv = repo.version("r1")
    assert isinstance(tv, TrainingVersion) and tv.logged and tv.status == "finished" and tv.checkpoint is None
    # veml verify checks the files a run logged: bit rot in one is named
    assert repo.verify().problems == []
    overwrite_artifact(root, art.sha256, b"\x89PNG rotten bits")
    try:
        assert [p for p in repo.verify().problems if "artifact 'confusion.png'" in p and "r1" in p]
    finally:
        overwrite_artifact(root, art.sha256, b"\x89PNG not really")


def test_a_failing_block_fails_the_run_with_the_exception(repo):
    with pytest.raises(ValueError, match="diverged"):
        with repo.start_run(name="r-fails", system_metrics_s=0) as run:
            run.log_metric("loss", 2.0, step=0)
            raise ValueError("diverged at step 7")
    info = repo.get_run("r-fails")
    assert (info.status, info.error) == ("failed", "ValueError: diverged at step 7")
    assert dict(info.metrics) == {"loss": 2.0}  # what was buffered was written before the end
    assert (info.data, info.model) == (None, None)  # a run needs neither


def test_a_killed_process_leaves_a_failed_run_that_can_be_resumed(repo, root):
    proc = worker(root, "hang", "r-killed", wait=False)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert repo.get_run("r-killed").status == "running"
        with pytest.raises(Conflict, match="is running"):
            repo.start_run(resume="r-killed")  # its process is alive: not ours to take over
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    node = repo.training.get("r-killed")
    assert repo.stores.graph.events(node.id)[-1]["status"] == "running"  # as the process left it
    assert repo.get_run("r-killed").status == "failed"  # read as failed at once: its process is gone
    # the next open of the repository on this host (any command, even a listing) writes the failure for good
    ok("data", "list", "--repo", root)
    events = repo.stores.graph.events(node.id)
    assert [e["status"] for e in events[-2:]] == ["running", "failed"] and "died" in events[-1]["error"]
    assert events[-1]["run"]["tags"] == {"stage": "before-kill"}  # the last state it wrote, whole
    veml.open(root).close()  # once: a second open finds nothing to mark
    repo.start_run(name="r-after", system_metrics_s=0).end()
    assert repo.stores.graph.events(node.id) == events
    shown = ok("train", "show", "r-killed", "--repo", root)
    assert shown["status"] == "failed" and "died" in shown["error"]
    assert shown["run"]["tags"] == {"stage": "before-kill"}
    # resumed from this process: parameters, tags and steps continue
    with repo.start_run(resume="r-killed", params={"epochs": 2}, system_metrics_s=0) as run:
        assert repo.get_run("r-killed").status == "running"
        run.log_metric("loss", 0.2)  # step 3: one past the killed process's last
    info = repo.get_run("r-killed")
    assert info.status == "finished" and dict(info.params) == {"lr": 0.1, "epochs": 2}
    assert info.metrics["loss"] == 0.2 and info.tags["stage"] == "before-kill"
    loss = [(r["step"], r["value"]) for r in repo.training.logs("r-killed") if r["key"] == "loss"]
    assert loss == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3)), (3, 0.2)]


def test_a_script_in_a_git_tree_records_its_commit_and_ends_its_runs(root, tmp_path):
    src = tmp_path / "project"
    src.mkdir()
    script = src / "train.py"
    script.write_text(Path(WORKER).read_text())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *cmd], cwd=src, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
    env = {**os.environ, "PYTHONPATH": str(Path(veml.__file__).parents[1])}
    res = subprocess.run([sys.executable, str(script), str(root), "finish", "r-git"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (src / "train.py").write_text(script.read_text() + "\n# changed\n")  # a dirty tree now
    for mode, name, extra in (("forget", "r-dirty", ()), ("forget", "r-crash", ("crash",))):
        res = subprocess.run([sys.executable, str(script), str(root), mode, name, *extra], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    with veml.open(root) as repo:
        clean, dirty, crashed = repo.get_run("r-git"), repo.get_run("r-dirty"), repo.get_run("r-crash")
    assert clean.git.commit == commit and not clean.git.dirty and clean.git.diff_sha256 is None
    assert Path(clean.git.root) == src.resolve() and clean.argv[0] == str(script)
    assert dirty.git.commit == commit and dirty.git.dirty and len(dirty.git.diff_sha256) == 64
    # a run the script never ended: ended with the interpreter, failed when it exits on an exception
    assert (dirty.status, dict(dirty.metrics)) == ("finished", {"loss": 0.5})
    assert crashed.status == "failed" and "RuntimeError: crashed outside" in crashed.error


def test_log_model_reuses_the_registry(repo, root, tmp_path):
    import torch
    from sklearn.linear_model import LogisticRegression

    from veml.adapters import torch_models as tm

    net = tm.build_classifier("resnet18", 3, {"image_size": 32})
    with repo.start_run(name="r-torch", data="digits", model="net", system_metrics_s=0) as run:
        logged = run.log_model(net)
    assert isinstance(logged, LoggedModel) and logged.runnable and logged.framework == "torch"
    assert logged.model == repo.models.get("net").id
    t = ok("train", "show", "r-torch", "--repo", root)
    assert t["checkpoint"] and t["class_names"] == ["digit0", "digit1", "digit2"] and t["task"] == "classification"
    # the checkpoint deploy/predict/--init-from read: VeML's torch format, as veml model register writes it
    ckpt = torch.load(io.BytesIO(repo.training.checkpoint(repo.training.get("r-torch"))), weights_only=True)
    assert ckpt["meta"] == {"class_names": ["digit0", "digit1", "digit2"], "task": "classification"}
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in net.state_dict().items())
    # no model version named: the one VeML recognises is made (as veml model register makes it)
    x = torch.randn(40, 4).numpy()
    est = LogisticRegression(max_iter=200).fit(x, (x[:, 0] > 0).astype(int))
    with repo.start_run(name="r-sk", system_metrics_s=0) as run:
        logged = run.log_model(est)
    assert logged.runnable and logged.framework == "sklearn"
    made = repo.models.get(logged.model)
    assert made.name == "r-sk-model" and made.props["adapter"] == "sklearn"
    assert repo.get_run("r-sk").model == made.id and repo.training.get("r-sk").props["model"] == made.id
    assert (made.id, "MODEL_TRAINING") in {(e["src"], e["kind"]) for e in ok("lineage", "r-sk", "--repo", root)["edges"]}
    # a model VeML cannot run, and any other file: kept as files, with the reason
    with repo.start_run(name="r-files", model="net", system_metrics_s=0) as run:
        (tmp_path / "weights.bin").write_bytes(b"\x00" * 100)
        with pytest.warns(UserWarning, match="not model version 'net'"):
            custom = run.log_model(torch.nn.Sequential(torch.nn.Linear(4, 2)))
            other = run.log_model(tmp_path / "weights.bin")
    assert not custom.runnable and "do not fit" in custom.reason
    assert not other.runnable and other.framework is None and other.size_bytes == 100
    assert repo.get_run("r-files").logged_model == other and "checkpoint" not in ok("train", "show", "r-files", "--repo", root)


def test_bad_input_is_refused_with_one_clear_error(repo, root, tmp_path):
    before = snapshot(root)
    for kwargs, error, needle in (
        ({"data": "no-such-data"}, NotFound, "no-such-data"),
        ({"model": "no-such-model"}, NotFound, "no-such-model"),
        ({"name": "digits"}, Conflict, "already taken"),
        ({"params": {"lr": object()}}, InvalidInput, "parameter 'lr'"),
        ({"params": {"lr": float("nan")}}, InvalidInput, "not a finite number"),
        ({"system_metrics_s": -1}, InvalidInput, "system_metrics_s"),
        ({"resume": "no-such-run"}, NotFound, "no-such-run"),
    ):
        with pytest.raises(error, match=needle):
            repo.start_run(**kwargs)
    assert snapshot(root) == before  # nothing written
    with pytest.raises(RepositoryNotFound):
        veml.start_run(repo=tmp_path)
    run = veml.start_run(name="r-bad", repo=root, params={"lr": 0.1}, system_metrics_s=0)
    with pytest.raises(InvalidInput, match="file not found"):
        run.log_artifact(tmp_path / "missing.png")
    with pytest.raises(InvalidInput, match="file not found"):
        run.log_model(tmp_path / "missing.onnx")
    with pytest.raises(InvalidInput, match="log_model takes"):
        run.log_model({"weights": [1, 2]})
    with pytest.raises(InvalidInput, match="already 0.1"):
        run.log_params({"lr": 0.2})
    with pytest.raises(InvalidInput, match="not a number"):
        run.log_metric("loss", "low")
    with pytest.raises(InvalidInput, match="system/"):
        run.log_metric("system/cpu_percent", 1.0)
    with pytest.raises(InvalidInput, match="at most 64"):
        run.log_metric("x" * 65, 1.0)
    with pytest.warns(UserWarning, match="'loss' of run 'r-bad' is nan"):
        run.log_metric("loss", float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per metric
        run.log_metric("loss", float("inf"))
    run.log_metric("loss", 1.5)
    info = run.end()
    assert info.status == "finished" and dict(info.metrics) == {"loss": 1.5}
    assert ok("train", "show", "r-bad", "--repo", root)["run"]["non_finite"] == {"loss": 2}
    for late in (lambda: run.log_metric("loss", 1.0), lambda: run.set_tag("a", "b"), lambda: run.end()):
        with pytest.raises(InvalidInput, match="has ended"):
            late()
    with pytest.raises(InvalidInput, match="its data is not 'digits'"):
        repo.start_run(resume=repo.start_run(name="r-ok", system_metrics_s=0).end().name, data="digits")


def test_log_model_takes_a_model_folder_and_refuses_hostile_ones(repo, root, tmp_path, monkeypatch):
    import torch

    folder = tmp_path / "bert-tiny"  # the layout save_pretrained writes: config, weights, a tokenizer sub-folder
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    torch.save({"w": torch.arange(6.0)}, folder / "pytorch_model.bin")
    (folder / "tokenizer" / "vocab.txt").write_text("[PAD]\n[CLS]\nhello\n")
    with repo.start_run(name="r-folder", system_metrics_s=0) as run:
        logged = run.log_model(folder)
        assert run.log_model(folder) == logged  # the same files, the same bytes: stored once
    assert logged.framework == "directory" and logged.name == "bert-tiny" and not logged.runnable
    assert "folder of files" in logged.reason and repo.get_run("r-folder").logged_model == logged
    back = repo.runs.download_model("r-folder", tmp_path / "back")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == \
        ["config.json", "pytorch_model.bin", "tokenizer/vocab.txt"]
    assert all((back / p).read_bytes() == (folder / p).read_bytes()
               for p in ("config.json", "pytorch_model.bin", "tokenizer/vocab.txt"))
    assert torch.load(back / "pytorch_model.bin")["w"].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(InvalidInput, match="already exists"):
        repo.runs.download_model("r-folder", back)  # never overwrites
    # hostile folders: refused with one clear error, the run's logged model unchanged
    outside = tmp_path / "secret.txt"
    outside.write_text("not the model's")
    (folder / "leak").symlink_to(outside)
    fifo = tmp_path / "fifo-model"
    fifo.mkdir()
    os.mkfifo(fifo / "weights.bin")
    run = repo.start_run(name="r-hostile", system_metrics_s=0)
    for bad, needle in ((folder, "symlink leading outside"), (fifo, "FIFO"), (tmp_path / "empty", "no files")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(InvalidInput, match=needle):
            run.log_model(bad)
    (folder / "leak").unlink()
    biggest = max(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    monkeypatch.setenv("VEML_MAX_FILE_MB", str((biggest + 1) / 2**20))  # each file fits, their sum does not
    with pytest.raises(InvalidInput, match="add up to over"):
        run.log_model(folder)
    assert run.end().logged_model is None
    with pytest.raises(InvalidInput, match="logged no model"):
        repo.runs.download_model("r-hostile", tmp_path / "none")


def test_start_run_finds_the_repository_as_the_cli_does(root, tmp_path, monkeypatch):
    (root / "scripts").mkdir(exist_ok=True)
    monkeypatch.chdir(root / "scripts")  # the nearest .veml/ upward
    veml.start_run(name="r-found-up", system_metrics_s=0).end()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEML_REPO", str(root))  # else $VEML_REPO
    with veml.start_run(name="r-found-env", system_metrics_s=0) as run:
        run.log_metric("loss", 1.0)
    with veml.open(root) as repo:
        assert repo.get_run("r-found-up").status == repo.get_run("r-found-env").status == "finished"


# ------------------------------------------------------------------ framework callbacks (extras)


def test_lightning_callback_logs_a_real_fit(repo):
    pytest.importorskip("lightning", reason="the [lightning] extra is not installed")
    import lightning.pytorch as pl
    import torch

    from veml.integrations.lightning import VemlCallback

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 4) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    with repo.start_run(name="r-lightning", system_metrics_s=0) as run:
        trainer = pl.Trainer(max_epochs=2, callbacks=[VemlCallback(run, log_model=True)], log_every_n_steps=1,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.fit(Tiny(), loader, loader)
    info = repo.get_run("r-lightning")
    assert info.status == "finished" and dict(info.params) == {"lr": 0.05, "hidden": 4}
    rows = repo.training.logs("r-lightning")
    assert [r["step"] for r in rows if r["key"] == "train_loss"][:4] == [1, 2, 3, 4]  # global steps, every batch
    assert {r["epoch"] for r in rows if r["key"] == "val_acc"} == {0, 1}
    assert set(info.metrics) == {"train_loss", "val_acc"}
    assert info.logged_model.framework == "torch" and not info.logged_model.runnable  # its own architecture: a file


def test_hf_trainer_callback_logs_a_real_training(repo, tmp_path):
    pytest.importorskip("transformers", reason="the [transformers] extra is not installed")
    pytest.importorskip("accelerate", reason="the [transformers] extra is not installed")
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from veml.integrations.hf import VemlCallback

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16, num_labels=2))
    ids = torch.randint(0, 32, (16, 6))
    data = [{"input_ids": ids[i], "labels": int(ids[i, 0] % 2)} for i in range(16)]
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=4, logging_steps=1, learning_rate=1e-3,
                             per_device_train_batch_size=4, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, seed=0)
    with repo.start_run(name="r-hf", system_metrics_s=0) as run:
        Trainer(model=model, args=args, train_dataset=data, callbacks=[VemlCallback(run)]).train()
        model.save_pretrained(tmp_path / "saved")  # a real Hugging Face folder, logged as one model
        logged = run.log_model(tmp_path / "saved")
    info = repo.get_run("r-hf")
    assert info.status == "finished" and info.logged_model == logged and logged.framework == "directory"
    back = repo.runs.download_model("r-hf", tmp_path / "back")
    assert BertForSequenceClassification.from_pretrained(back).config.hidden_size == 8
    assert info.params["learning_rate"] == 1e-3 and info.params["max_steps"] == 4 and info.params["model.hidden_size"] == 8
    loss = [r["step"] for r in repo.training.logs("r-hf") if r["key"] == "loss"]
    assert loss == [1, 2, 3, 4] and "train_runtime" in info.metrics
