"""``repo.mlflow``: MLflow interop, one object per repository (``veml import mlflow`` / ``veml export mlflow``).

mlflow itself (the ``[mlflow]`` extra, ``mlflow-skinny``) is imported only when one of these runs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from veml.errors import InvalidInput
from veml.interop.mlflow_export import ExportReport, MlflowExport
from veml.interop.mlflow_import import ImportReport, MlflowImport
from veml.interop.mlflow_store import parse
from veml.versions.aliases import Aliases
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions
from veml.versions.lineage import LineageAPI
from veml.versions.model import ModelVersions
from veml.versions.registry import Registry
from veml.versions.runs import Runs
from veml.versions.training import TrainingVersions


def repository_identity(root: str, metadata_url: str) -> str:
    """What tells this repository's exported runs apart from another's: its folder for the embedded
    default, else its metadata database (without password: team members' clones share it)."""
    if metadata_url.startswith("sqlite:///") and not metadata_url.startswith("sqlite:////"):
        return root  # relative to .veml/: the repository's own folder
    try:
        query = urlsplit(metadata_url).query  # e.g. ?schema=…: one database holds many repositories
        return parse(metadata_url).label + (f"?{query}" if query else "")
    except InvalidInput:  # a metadata URL MLflow would not take: the folder tells the repository apart
        return root


class MlflowBridge:
    """Both directions go through the version APIs, never the stores."""

    def __init__(self, data: DataVersions, models: ModelVersions, training: TrainingVersions, registry: Registry,
                 runs: Runs, aliases: Aliases, inference: InferenceVersions, lineage: LineageAPI,
                 identity: str) -> None:
        self._import = MlflowImport(runs, data, models, training, registry, aliases, identity)
        self._export = MlflowExport(training, inference, lineage, identity)

    def import_from(self, uri: str, experiment: str | None = None) -> ImportReport:
        """Runs, registered model versions and aliases of the store at ``uri`` (one experiment or all) not
        imported before."""
        return self._import.run(uri, experiment)

    def export_to(self, uri: str, experiment: str = "veml") -> ExportReport:
        """Every training and inference version not exported before, as runs of ``experiment``."""
        return self._export.run(uri, experiment)


__all__ = ["MlflowBridge", "repository_identity", "ImportReport", "ExportReport"]
