"""OpenAPI links: how an answer's ids feed the next request.

A version object (from a filter, a merge, a tag or a lookup) carries the ``id`` that every
``{ref}`` path of the API accepts; a sample page carries the ``data_id`` of its rows.  Declaring that
in the document (OpenAPI 3 ``links``) lets a client generator -- or a stateful fuzzer such as
schemathesis -- chain calls with real ids instead of guessing them.  This module only adds ``links``
to the document FastAPI generated; it changes no route.
"""

from __future__ import annotations

from typing import Any

# (producer method, producer path, status) -> [(link name, consumer method, consumer path, {param: expression})]
_VERSION = "$response.body#/id"
_VERSION_CONSUMERS = [
    ("GetVersion", "get", "/api/v1/versions/{ref}", {"ref": _VERSION}),
    ("GetLineage", "get", "/api/v1/lineage/{ref}", {"ref": _VERSION}),
    ("GetLineageIds", "get", "/api/v1/lineage/{ref}/ids", {"ref": _VERSION}),
    ("GetStats", "get", "/api/v1/data/{ref}/stats", {"ref": _VERSION}),
    ("GetSamples", "get", "/api/v1/data/{ref}/samples", {"ref": _VERSION}),
    ("Filter", "post", "/api/v1/data/{ref}/filter", {"ref": _VERSION}),
    ("Tag", "post", "/api/v1/versions/{ref}/tags", {"ref": _VERSION}),
]
_FIRST = "$response.body#/items/0/id"
LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, dict[str, str]]]] = {
    ("post", "/api/v1/data/{ref}/filter", "201"): _VERSION_CONSUMERS,
    ("post", "/api/v1/data/merge", "201"): _VERSION_CONSUMERS,
    ("post", "/api/v1/versions/{ref}/tags", "200"): _VERSION_CONSUMERS,
    ("get", "/api/v1/versions/{ref}", "200"): _VERSION_CONSUMERS,
    ("get", "/api/v1/versions", "200"): [(n, m, p, {"ref": _FIRST}) for n, m, p, _ in _VERSION_CONSUMERS],
    ("get", "/api/v1/data/{ref}/samples", "200"): [
        ("GetImage", "get", "/api/v1/data/{ref}/samples/{data_id}/image",
         {"ref": "$request.path.ref", "data_id": "$response.body#/items/0/data_id"}),
        ("GetSample", "get", "/api/v1/data/{ref}/samples/{data_id}",
         {"ref": "$request.path.ref", "data_id": "$response.body#/items/0/data_id"}),
    ],
}


def add_links(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``links`` on the producers' responses (operations it lacks are skipped)."""
    paths = document.get("paths", {})

    def operation_id(method: str, path: str) -> str | None:
        return paths.get(path, {}).get(method, {}).get("operationId")

    for (method, path, status), consumers in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for name, c_method, c_path, parameters in consumers:
            op = operation_id(c_method, c_path)
            if op is not None:
                links[name] = {"operationId": op, "parameters": dict(parameters)}
    return document


__all__ = ["add_links", "LINKS"]
