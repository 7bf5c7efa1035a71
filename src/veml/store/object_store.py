"""Where a store lives: a local directory or ``s3://bucket/prefix``, behind one small interface.

The Lance stores (samples, embeddings) hand their URI and :attr:`Location.storage_options` to
Lance, which talks to S3 through its own Rust object store; everything Lance does not do for us
(does a table exist, how many bytes, which tables are there) goes through :class:`Location`, which
is plain ``pathlib``/``os`` for a local directory — so local behaviour and speed are exactly what
they were — and ``s3fs`` for ``s3://``.  The artifact store uses the same s3fs file system.

Two libraries, one endpoint: Lance (Rust ``object_store``) and s3fs (aiobotocore) read different
configuration, so :class:`S3Settings` is resolved once — the ``[s3]`` table of ``config.toml``
over the standard AWS environment variables — and passed *explicitly* to both, so both talk to the
same endpoint with the same credentials and the same path-style addressing.

Retries (transient HTTP 5xx, ``SlowDown``, dropped connections) are left to the libraries, which
already retry with exponential backoff, but their budgets are set here rather than inherited —
``max_retries`` (default 3), ``retry_timeout_s`` (60) and ``connect_timeout_s`` (5) in ``[s3]``:

* Lance: ``client_max_retries`` / ``client_retry_timeout`` bound the object-store client's retries
  of every request (Lance's defaults are 10 retries within 180 s — minutes before an unreachable
  endpoint is reported); ``lance_aimd_max_retries`` is set to 0 so that Lance's throttle layer
  (which still lowers the request rate on 429/503) does not multiply that budget by four.  Some
  Lance operations wrap requests in short loops of their own (measured with Lance 14: opening a
  dataset lists its versions up to 6 times, a manifest is fetched up to 4 times), so the worst
  case for one Lance call is a small multiple of ``1 + max_retries`` requests — bounded, which is
  the point.
* s3fs: botocore's ``standard`` retry mode makes ``1 + max_retries`` attempts of each request
  (5xx, throttling, connection errors; jittered exponential backoff capped at 20 s).  s3fs's own
  outer loop, which also covers a body that breaks off mid-download and ``SlowDown``, is limited
  to 2 attempts, so one s3fs call makes at most ``2 × (1 + max_retries)`` requests.

Errors from either library become one :class:`~veml.errors.StorageError` line naming the store
and the cause (missing bucket, access denied, endpoint unreachable, gave up after retries) — the
CLI prints it as ``error: …``, never a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from veml.errors import InvalidInput, MissingExtra, StorageError, VemlError

DEFAULT_MAX_RETRIES = 3  # 4 attempts: more than botocore's own default (3), few enough to report a dead endpoint in seconds
DEFAULT_RETRY_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_REGION = "us-east-1"
S3FS_OUTER_ATTEMPTS = 2

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_S3_KEYS = {"endpoint_url", "region", "allow_http", "anon", "max_retries", "retry_timeout_s", "connect_timeout_s"}


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"[s3] {name} must be true or false, not {value!r}")


def _number(value: Any, name: str, kind: type) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"[s3] {name} must be a number, not {value!r}") from None
    if out < 0:
        raise InvalidInput(f"[s3] {name} must not be negative")
    return out


@dataclass(frozen=True)
class S3Settings:
    """Endpoint, region, credentials and retry budget shared by Lance and s3fs."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    allow_http: bool = False
    anon: bool = False
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_timeout_s: float = DEFAULT_RETRY_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    @classmethod
    def resolve(cls, table: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> "S3Settings":
        """The ``[s3]`` table of ``config.toml`` over the standard AWS environment variables.

        Credentials come only from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_SESSION_TOKEN``), never from ``config.toml``, which is shared with the repository;
        without them each library falls back to its own chain (profiles, instance roles).
        """
        env = os.environ if env is None else env
        table = dict(table or {})
        unknown = sorted(set(table) - _S3_KEYS)
        if unknown:
            raise InvalidInput(f"[s3] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_S3_KEYS))}")
        endpoint = table.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        if endpoint is not None and not re.match(r"^https?://[^/]+", str(endpoint)):
            raise InvalidInput(f"S3 endpoint {endpoint!r} must look like http(s)://host[:port]")
        allow_http = (_flag(table["allow_http"], "allow_http") if "allow_http" in table
                      else bool(endpoint and str(endpoint).startswith("http://")))
        return cls(
            endpoint_url=str(endpoint).rstrip("/") if endpoint else None,
            region=str(table.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION),
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            allow_http=allow_http,
            anon=_flag(table.get("anon", False), "anon"),
            max_retries=_number(table.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries", int),
            retry_timeout_s=_number(table.get("retry_timeout_s", DEFAULT_RETRY_TIMEOUT_S), "retry_timeout_s", float),
            connect_timeout_s=_number(table.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S), "connect_timeout_s", float),
        )

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"

    def lance_options(self) -> dict[str, str]:
        """``storage_options`` for ``lance.dataset`` / ``lance.write_dataset`` (Rust object_store keys)."""
        opts = {
            "aws_region": self.region or DEFAULT_REGION,
            "client_max_retries": str(self.max_retries),
            "client_retry_timeout": str(max(1, int(round(self.retry_timeout_s)))),
            "connect_timeout": f"{max(1, int(round(self.connect_timeout_s)))}s",
            "lance_aimd_max_retries": "0",
        }
        if self.endpoint_url:
            opts["aws_endpoint"] = self.endpoint_url
            opts["aws_virtual_hosted_style_request"] = "false"
        if self.allow_http:
            opts["allow_http"] = "true"
        if self.anon:
            opts["aws_skip_signature"] = "true"
        else:
            for key, value in (("aws_access_key_id", self.access_key_id), ("aws_secret_access_key", self.secret_access_key),
                               ("aws_session_token", self.session_token)):
                if value:
                    opts[key] = value
        return opts

    def s3fs_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` that reach the same endpoint as :meth:`lance_options`."""
        client: dict[str, Any] = {"region_name": self.region or DEFAULT_REGION}
        config: dict[str, Any] = {
            "retries": {"total_max_attempts": 1 + self.max_retries, "mode": "standard"},
            "connect_timeout": self.connect_timeout_s,
            "read_timeout": 60,
        }
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
            config["s3"] = {"addressing_style": "path"}  # as Lance's object_store does for a custom endpoint
        kwargs: dict[str, Any] = {"client_kwargs": client, "config_kwargs": config, "anon": self.anon,
                                  "use_listings_cache": False}
        if not self.anon:
            kwargs.update(key=self.access_key_id, secret=self.secret_access_key, token=self.session_token)
        return kwargs


def require_s3fs() -> None:
    if importlib.util.find_spec("s3fs") is None:
        raise MissingExtra("s3fs", "s3")


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` → ``("bucket", "some/prefix")``."""
    if not url.startswith("s3://"):
        raise InvalidInput(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise InvalidInput(f"{url!r}: {bucket!r} is not a valid S3 bucket name")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidInput(f"{url!r}: the prefix must not contain empty, '.' or '..' parts")
    return bucket, prefix


# --- errors ---------------------------------------------------------------------------------------

_ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                 "AllAccessDisabled", "InvalidClientTokenId", "403", "Forbidden"}
_CONNECT_HINTS = ("error sending request", "connection refused", "tcp connect error", "could not connect",
                  "connect timeout", "connection reset", "dns error", "failed to lookup address")


_SERVER_CODES = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "TooManyRequests")
_STATUS_5XX = re.compile(r"status code: (5\d\d)|\((5\d\d)\)|\b(5\d\d) (?:service unavailable|internal server error|"
                         r"bad gateway|gateway timeout|slow ?down)")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (s3fs and Lance wrap botocore/HTTP errors)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _has(exc: BaseException, *names: str) -> bool:
    return any(type(e).__name__ in names for e in _chain(exc))


def _codes(exc: BaseException) -> Iterator[str]:
    """Error codes found on ``exc`` and its causes: botocore's, or the ``<Code>`` in an S3 XML reply."""
    for cur in _chain(exc):
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                yield str(code)
        yield from re.findall(r"<Code>([^<]+)</Code>", str(cur))


def _one_line(text: str, limit: int = 240) -> str:
    text = re.sub(r"LanceError\(\w+\):\s*", "", text)
    text = re.sub(r",?\s*/\S+\.rs:\d+:\d+", "", text)  # Rust source locations
    text = re.sub(r"<\?xml.*", "", text, flags=re.S)
    text = " ".join(text.split()).strip(" ,:-")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException, settings: S3Settings | None = None, bucket: str | None = None) -> str:
    """A short, one-line reason for a storage failure, saying what to check where that is known."""
    codes = list(_codes(exc))
    text = " ".join(str(e) for e in _chain(exc)).lower()
    where = settings.where if settings else "the object store"
    if "NoSuchBucket" in codes or "the specified bucket does not exist" in text:
        return f"bucket {bucket!r} does not exist at {where}" if bucket else f"the bucket does not exist at {where}"
    if any(c in _ACCESS_CODES for c in codes) or isinstance(exc, PermissionError):
        code = next((c for c in codes if not c.isdigit()), f"HTTP {codes[0]}" if codes else "forbidden")
        return f"access denied by {where} ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    if _has(exc, "NoCredentialsError") or "no credentials" in text or "unable to locate credentials" in text:
        return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or [s3] anon = true)"
    n = settings.max_retries if settings else None
    retries = " after retrying" if n is None else f" after {n} {'retry' if n == 1 else 'retries'}" if n else ""
    if _has(exc, "EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or any(h in text for h in _CONNECT_HINTS):
        return f"cannot reach the object store at {where}{retries}"
    if _has(exc, "ConnectionClosedError", "ServerDisconnectedError", "ReadTimeoutError") or "connection was closed" in text:
        return f"the object store at {where} kept dropping the connection{retries}"
    m = _STATUS_5XX.search(text)
    status = next((g for g in m.groups() if g), "") if m else next((c for c in codes if re.fullmatch(r"5\d\d", c)), "")
    named = next((n for n in _SERVER_CODES if n in codes or n.lower() in text), "")
    if status or named:
        what = " ".join(p for p in (f"HTTP {status}" if status else "", named) if p)
        return f"the object store at {where} kept failing ({what}){retries}"
    return _one_line(str(exc)) or type(exc).__name__


# --- locations ------------------------------------------------------------------------------------


class LocalLocation:
    """A directory on this machine; Lance gets a plain path and no storage options."""

    is_local = True
    storage_options: dict[str, str] | None = None

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def child(self, name: str) -> str:
        return str(self.root / name)

    def makedirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """Nothing to probe: a local directory is created on demand."""

    def dataset_exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def list_children(self, suffix: str) -> list[str]:
        return sorted(p.name for p in self.root.glob(f"*{suffix}")) if self.root.exists() else []

    def size_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(dirpath, f))
                except FileNotFoundError:
                    pass  # a concurrent writer's temp file, renamed or removed since the listing
        return total

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Lance's OSError/ValueError on a local path become a StorageError naming the store."""
        try:
            yield
        except VemlError:
            raise
        except (OSError, ValueError) as exc:
            raise StorageError(f"{what} {self.root}: {_one_line(str(exc))}") from exc


class S3Location:
    """``s3://bucket/prefix``: Lance gets the URI plus explicit storage options; listing, sizes and
    existence checks go through s3fs (one ``ListObjectsV2`` with ``MaxKeys=1`` per check)."""

    is_local = False

    def __init__(self, url: str, settings: S3Settings | None = None) -> None:
        require_s3fs()
        self.bucket, self.prefix = split_s3_url(url)
        self.settings = settings or S3Settings.resolve()
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.root = self.uri
        self.storage_options: dict[str, str] | None = self.settings.lance_options()
        self._fs = None

    @property
    def fs(self):
        """The s3fs file system (created on first use; fsspec shares one per configuration)."""
        if self._fs is None:
            import s3fs

            fs = s3fs.S3FileSystem(**self.settings.s3fs_kwargs())
            fs.retries = S3FS_OUTER_ATTEMPTS  # a class attribute, not a constructor argument
            self._fs = fs
        return self._fs

    def key(self, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, name) if p)

    def path(self, name: str = "") -> str:
        """``bucket/key`` as s3fs names objects."""
        return "/".join(p for p in (self.bucket, self.key(name)) if p)

    def child(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def makedirs(self) -> None:
        """Object stores have no directories."""

    def _any_object(self, key_prefix: str) -> bool:
        out = self.fs.call_s3("list_objects_v2", Bucket=self.bucket, Prefix=key_prefix, MaxKeys=1)
        return bool(out.get("KeyCount") or out.get("Contents"))

    @staticmethod
    def is_bucket_missing(exc: BaseException) -> bool:
        """s3fs raises FileNotFoundError for a missing key and a missing bucket alike; tell them apart."""
        return "NoSuchBucket" in set(_codes(exc)) or "bucket does not exist" in str(exc).lower()

    def check(self) -> None:
        """Fail now, with one clear line, if the bucket is missing, unreachable or forbidden."""
        with self.errors("cannot use the object store"):
            self._any_object(self.key() + "/" if self.prefix else "")

    def dataset_exists(self, name: str) -> bool:
        with self.errors(f"cannot look for {name} in"):
            return self._any_object(self.key(name) + "/_versions/")

    def list_children(self, suffix: str) -> list[str]:
        with self.errors("cannot list"):
            try:
                entries = self.fs.ls(self.path(), detail=False)
            except FileNotFoundError:
                return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/").endswith(suffix)})

    def size_bytes(self) -> int:
        with self.errors("cannot measure the size of"):
            try:
                return int(self.fs.du(self.path(), total=True))
            except FileNotFoundError:
                return 0

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Any failure of Lance or s3fs becomes one StorageError line: what failed, where, why."""
        try:
            yield
        except VemlError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and Lance raise many unrelated types
            if not _storage_failure(exc):
                raise
            raise StorageError(f"{what} {self.uri}: {describe(exc, self.settings, self.bucket)}") from exc


def _storage_failure(exc: BaseException) -> bool:
    """OSError/ValueError (Lance, s3fs), botocore and aiohttp errors; not our own bugs (TypeError…)."""
    if isinstance(exc, (OSError, ValueError, TimeoutError)):
        return True
    mod = type(exc).__module__
    return mod.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec"))


Location = LocalLocation | S3Location


def location(root: Path | str, s3: S3Settings | Mapping[str, Any] | None = None) -> Location:
    """A :class:`LocalLocation` for a path, an :class:`S3Location` for ``s3://``."""
    if isinstance(root, str) and root.startswith("s3://"):
        settings = s3 if isinstance(s3, S3Settings) else S3Settings.resolve(s3)
        return S3Location(root, settings)
    if isinstance(root, str) and "://" in root and not root.startswith("file://"):
        raise InvalidInput(f"unsupported storage URL {root!r}: use a local path or s3://bucket/prefix")
    return LocalLocation(Path(str(root).removeprefix("file://")))


__all__ = ["S3Settings", "LocalLocation", "S3Location", "Location", "location", "describe", "require_s3fs",
           "split_s3_url", "DEFAULT_MAX_RETRIES"]
