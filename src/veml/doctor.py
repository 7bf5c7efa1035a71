"""``veml doctor``: which extras and services this machine has, and whether the repository's stores answer.

Nothing heavy is imported: a package counts as importable when :func:`importlib.util.find_spec` finds
its top-level module, and its version comes from its installed metadata.  The extras and their
requirements are read from VeML's own installed metadata, so the report follows pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from veml.errors import RepositoryNotFound, VemlError

CORE = "core"  # the name the report gives to the dependencies every install has
CHROMIUM_ENV = "VEML_CHROMIUM"
PG_BIN_ENV = "VEML_PG_BIN"
_PG_TOOLS = ("initdb", "pg_ctl", "postgres")


def postgres_bin_dir() -> Path | None:
    """The directory holding PostgreSQL's server binaries: ``$VEML_PG_BIN``, the newest
    ``/usr/lib/postgresql/*/bin`` (Debian), or ``initdb``'s directory on ``$PATH``."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted((p for p in root.iterdir() if p.name.split(".")[0].isdigit()),
                          key=lambda p: int(p.name.split(".")[0]), reverse=True)
        candidates.extend(v / "bin" for v in versions)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if all((c / exe).is_file() and os.access(c / exe, os.X_OK) for exe in _PG_TOOLS):
            return c
    return None


def chromium_path() -> Path | None:
    """``$VEML_CHROMIUM``, else the first of chromium / chromium-browser / google-chrome on ``$PATH``."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return Path(given) if os.access(given, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else None


def _modules_of(dist: str) -> list[str]:
    """The top-level modules a distribution installs (``pillow`` -> ``PIL``), from its metadata."""
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return []
    top = d.read_text("top_level.txt")
    if top:
        return [m for m in top.split() if not m.startswith("_")]
    names = {f.parts[0].removesuffix(".py") for f in d.files or () if f.parts and not f.parts[0].endswith((".dist-info", ".pth"))
             and (f.suffix == ".py" or len(f.parts) > 1)}
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_") and n != "__pycache__") or [dist.replace("-", "_")]


def _package(req: Any) -> dict[str, Any]:
    try:
        installed: str | None = md.version(req.name)
    except md.PackageNotFoundError:
        installed = None
    modules = _modules_of(req.name) if installed else []
    importable = bool(modules) and all(importlib.util.find_spec(m) is not None for m in modules[:1])
    satisfies = installed is not None and req.specifier.contains(installed, prereleases=True)
    return {"name": req.name, "required": str(req.specifier) or None, "installed": installed,
            "importable": importable, "ok": satisfies and importable}


def extras_report() -> dict[str, Any] | None:
    """Per extra (and ``core``): ``available`` and one entry per package; ``None`` when VeML runs
    from a source tree that was never installed (there is no metadata to read the extras from)."""
    from packaging.requirements import Requirement

    try:
        requires = md.requires("veml") or []
    except md.PackageNotFoundError:
        return None
    groups: dict[str, list[dict[str, Any]]] = {CORE: []}
    includes: dict[str, list[str]] = {}
    for line in requires:
        req = Requirement(line)
        extra = CORE
        if req.marker is not None:
            extra = next((e for e in _marker_extras(str(req.marker))), CORE)
        groups.setdefault(extra, [])
        if req.name == "veml":  # dev = veml[sklearn,server,…] + its own packages
            includes.setdefault(extra, []).extend(sorted(req.extras))
        else:
            groups[extra].append(_package(req))
    out: dict[str, Any] = {}
    for extra, pkgs in groups.items():
        missing = [p["name"] for p in pkgs if not p["ok"]]
        out[extra] = {"available": not missing, "missing": missing, "includes": includes.get(extra, []), "packages": pkgs}
    for extra, inner in includes.items():  # an extra that includes others is available only with them
        gaps = [e for e in inner if not out.get(e, {}).get("available", False)]
        out[extra]["available"] = out[extra]["available"] and not gaps
        out[extra]["missing"] += [f"[{e}]" for e in gaps]
    return out


def _marker_extras(marker: str) -> list[str]:
    import re

    return re.findall(r'extra\s*==\s*"([^"]+)"', marker)


def services_report() -> dict[str, Any]:
    pg = postgres_bin_dir()
    chromium = chromium_path()
    return {
        "postgresql": {"available": pg is not None, "path": str(pg) if pg else None,
                       "version": _first_line([str(pg / "initdb"), "--version"]) if pg else None,
                       "needed_for": "the PostgreSQL test stage (tests/pg_cluster.py starts a private cluster)"},
        "chromium": {"available": chromium is not None, "path": str(chromium) if chromium else None,
                     "needed_for": "the browser tests of the web UI"},
    }


def repository_report(path: str | None) -> dict[str, Any] | None:
    """The repository at ``path`` (or found upward / ``$VEML_REPO``): ``None`` when there is none and
    none was asked for; else ``ok`` with the metadata database and each store URL's reachability."""
    import veml
    from veml.repository import CONFIG, DEFAULTS, DIRNAME, find_root
    from veml.store import probe_store_urls

    try:
        root = find_root(path)
    except RepositoryNotFound as exc:
        return None if path is None else {"path": str(path), "ok": False, "error": str(exc), "stores": {}}
    out: dict[str, Any] = {"path": str(root), "ok": True, "error": None, "stores": {}}
    try:
        with veml.open(root) as repo:
            stores = {"metadata_url": {"url": repo.config["metadata_url"], "reachable": True, "error": None,
                                       "versions": repo.versions()[1]}}
            config = repo.config
    except VemlError as exc:
        import tomllib

        try:
            config = {**DEFAULTS, **tomllib.loads((root / DIRNAME / CONFIG).read_text())}
        except (OSError, tomllib.TOMLDecodeError):
            config = {}
        out.update(ok=False, error=str(exc))
        stores = {"metadata_url": {"url": config.get("metadata_url"), "reachable": False, "error": str(exc)}}
    if config:
        try:
            probed = probe_store_urls(config, root / DIRNAME)
        except VemlError as exc:  # a malformed URL or [s3] table
            probed = {k: str(exc) for k in ("storage_url", "artifacts_url", "embeddings_url")}
        for key, error in probed.items():
            stores[key] = {"url": config.get(key), "reachable": error is None, "error": error}
            if error is not None:
                out.update(ok=False, error=out["error"] or error)
    out["stores"] = stores
    return out


def diagnose(repo_path: str | None = None) -> dict[str, Any]:
    """Everything ``veml doctor`` reports (README: "veml doctor" lists the keys)."""
    from veml.adapters.threads import choose_threads

    try:
        threads: dict[str, Any] = choose_threads().to_json()
    except VemlError as exc:  # a malformed $VEML_THREADS: training would refuse it with this line
        threads = {"threads": None, "source": "error", "error": str(exc)}
    try:
        version = md.version("veml")
    except md.PackageNotFoundError:
        import veml

        version = veml.__version__
    return {"veml": version, "python": platform.python_version(), "platform": platform.platform(),
            "extras": extras_report(), "services": services_report(), "threads": threads,
            "repository": repository_report(repo_path)}


__all__ = ["diagnose", "postgres_bin_dir", "chromium_path", "extras_report", "services_report", "repository_report"]
