"""Where signray's files live: a local path or an object-store URI, behind one pathlib-like API.

``s3://bucket/key``, ``gs://bucket/key`` (``gcs://``) and ``abfs[s]://container@account...``
become a `RemotePath`; anything else is a local `pathlib.Path`. Both answer the same questions
(``/``, ``name``, ``parent``, ``exists()``, ``is_file()``, ``is_dir()``, ``iterdir()``,
``glob()``, ``read_bytes()``, ``read_text()``), so the readers of experiments, runs and data are
written once. Writes go through `signray.io` (atomic locally, whole-object on object stores).

A URI is opened with ``pyarrow.fs.FileSystem.from_uri``, exactly as Ray opens its
``storage_path``: credentials and endpoints come from the usual environment (``AWS_*``,
``AWS_ENDPOINT_URL`` for S3-compatible servers, ``GOOGLE_APPLICATION_CREDENTIALS``, the
``AZURE_*`` variables). A `RemotePath` pickles with its filesystem, so Ray workers reach the same
endpoint as the driver that checked it; they still need their own credentials.

A URI never turns into a local folder: ``os.fspath()`` of a `RemotePath` raises, and
`as_location` refuses a path such as ``s3:/bucket/x`` that lost its ``//`` on the way through
``pathlib``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from signray.errors import ConfigError

__all__ = [
    "URI_SCHEMES",
    "Location",
    "RemotePath",
    "absolute",
    "as_location",
    "is_uri",
    "explain_error",
    "filesystem_and_path",
    "open_input",
    "require_local",
    "writable_problem",
]

# Object stores pyarrow opens by URI; `gcs` is an alias of `gs`.
URI_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss")
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
# What pathlib leaves of a URI: "s3://b/x" -> "s3:/b/x".
_COLLAPSED_RE = re.compile(r"^(" + "|".join(URI_SCHEMES) + r"):/(?!/)", re.IGNORECASE)

# One filesystem per store root ("s3://bucket?query") and per environment it was opened with.
_FILESYSTEMS: dict[tuple[str, tuple], tuple[Any, str]] = {}
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


def is_uri(location: Any) -> bool:
    """True for an object-store URI (str or `RemotePath`); False for local paths."""
    if isinstance(location, RemotePath):
        return True
    if not isinstance(location, str):
        return False
    match = _URI_RE.match(location)
    return bool(match) and match.group(1).lower() in URI_SCHEMES


def _key(root: str) -> tuple[str, tuple]:
    """A store opened again after its endpoint or credentials changed is a new filesystem."""
    return root, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))


def _filesystem(root: str) -> tuple[Any, str]:
    """(pyarrow filesystem, its path of the store root) for ``scheme://netloc[?query]``."""
    key = _key(root)
    if key not in _FILESYSTEMS:
        from pyarrow.fs import FileSystem

        try:
            _FILESYSTEMS[key] = FileSystem.from_uri(root)
        except (OSError, ValueError, ImportError) as err:
            raise ConfigError([f"cannot open the object store {root}: {err}"]) from None
    return _FILESYSTEMS[key]


class RemotePath:
    """A file or folder in an object store, with the part of pathlib's API signray uses.

    Folders are key prefixes: they exist while something is below them, `mkdir` does nothing.
    """

    __slots__ = ("_key", "_query", "_root", "_type")

    def __init__(self, uri: str) -> None:
        match = _URI_RE.match(uri)
        if not match or match.group(1).lower() not in URI_SCHEMES:
            raise ValueError(f"not an object-store URI: {uri!r}")
        scheme, rest = match.group(1).lower(), match.group(2)
        rest, _, query = rest.partition("?")
        netloc, _, key = rest.partition("/")
        if not netloc:
            raise ConfigError([f"{uri}: no bucket (expected {scheme}://BUCKET/PATH)"])
        self._root = f"{scheme}://{netloc}"
        self._query = query
        self._key = "/".join(part for part in key.split("/") if part)
        self._type = None  # the FileType seen when listing the parent (saves a request)

    # ---- naming
    def __str__(self) -> str:
        text = f"{self._root}/{self._key}" if self._key else self._root
        return f"{text}?{self._query}" if self._query else text

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __fspath__(self) -> str:
        raise TypeError(f"{self} is an object-store URI; this operation needs a local path")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __lt__(self, other: RemotePath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __reduce__(self):
        # The driver's filesystem travels with the path: workers reach the same endpoint.
        return _restore, (str(self), _FILESYSTEMS.get(_key(self._store)))

    def _child(self, key: str, file_type: Any = None) -> RemotePath:
        path = RemotePath.__new__(RemotePath)
        path._root, path._query, path._key, path._type = self._root, self._query, key, file_type
        return path

    def __truediv__(self, name: str | os.PathLike[str]) -> RemotePath:
        parts = [p for p in str(name).split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"{name!r}: relative parts are not allowed in object-store paths")
        return self._child("/".join([self._key, *parts]) if self._key else "/".join(parts))

    @property
    def name(self) -> str:
        return self._key.rpartition("/")[2]

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> RemotePath:
        return self._child(self._key.rpartition("/")[0])

    def resolve(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    # ---- the filesystem
    @property
    def _store(self) -> str:
        return f"{self._root}?{self._query}" if self._query else self._root

    @property
    def fs(self):
        """The pyarrow filesystem of this store (opened once per process)."""
        return _filesystem(self._store)[0]

    @property
    def fs_path(self) -> str:
        """This path as the filesystem names it (``bucket/key`` for S3 and GCS)."""
        base = _filesystem(self._store)[1].rstrip("/")
        return f"{base}/{self._key}" if self._key else base

    def _file_type(self) -> str:
        """ "File", "Directory" or "NotFound" (one request, unless seen when listing)."""
        from pyarrow.fs import FileType

        found = self._type if self._type is not None else self.fs.get_file_info(self.fs_path).type
        return FileType(found).name

    def exists(self) -> bool:
        return self._file_type() != "NotFound"

    def is_file(self) -> bool:
        return self._file_type() == "File"

    def is_dir(self) -> bool:
        return self._file_type() == "Directory"

    def iterdir(self) -> Iterator[RemotePath]:
        """What is directly below this folder (nothing if it does not exist)."""
        from pyarrow.fs import FileSelector

        selector = FileSelector(self.fs_path, allow_not_found=True, recursive=False)
        for info in self.fs.get_file_info(selector):
            yield self._child(f"{self._key}/{info.base_name}".lstrip("/"), info.type)

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """Entries of this folder whose name matches `pattern` (one level, no ``/``)."""
        if "/" in pattern or "**" in pattern:
            raise ValueError(f"only one-level patterns are supported on object stores: {pattern}")
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A seekable binary reader; writing goes through `signray.io`."""
        if mode not in ("r", "rb"):
            raise ValueError(f"{self}: object-store files are written with signray.io, not {mode}")
        return self.fs.open_input_file(self.fs_path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.fs_path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Folders are key prefixes: nothing to create."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise


def _restore(uri: str, filesystem: tuple[Any, str] | None) -> RemotePath:
    path = RemotePath(uri)
    if filesystem is not None:
        _FILESYSTEMS.setdefault(_key(path._store), filesystem)
    return path


Location = Path | RemotePath


def as_location(location: str | os.PathLike[str] | RemotePath) -> Location:
    """A `RemotePath` for an object-store URI, else a local `Path` (``~`` expanded).

    Refuses other URI schemes and a path that is a URI whose ``//`` pathlib collapsed.
    """
    if isinstance(location, RemotePath):
        return location
    text = os.fspath(location)
    match = _URI_RE.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme in URI_SCHEMES:
            return RemotePath(text)
        if scheme == "file":
            return Path(match.group(2)).expanduser()
        schemes = ", ".join(s + "://" for s in URI_SCHEMES)
        raise ConfigError(
            [f"{text}: unsupported URI scheme {scheme!r} (expected a local path or {schemes})"]
        )
    if _COLLAPSED_RE.match(text):
        fixed = text.replace(":/", "://", 1)
        raise ConfigError(
            [f"{text} looks like an object-store URI that lost its '//' (write it as {fixed})"]
        )
    return Path(text).expanduser()


def absolute(location: str | os.PathLike[str] | RemotePath) -> Location:
    """`as_location`, made absolute when local (trials run in other folders and nodes)."""
    found = as_location(location)
    return found if isinstance(found, RemotePath) else found.resolve()


def require_local(location: str | os.PathLike[str] | RemotePath, what: str) -> Path:
    """A local path for `what`, or a clear error when it is an object-store URI."""
    found = as_location(location)
    if isinstance(found, RemotePath):
        raise ConfigError([f"{what} must be a local path, but got the object-store URI {found}"])
    return found


def filesystem_and_path(location: str | os.PathLike[str] | RemotePath) -> tuple[Any, str]:
    """(pyarrow filesystem, its path) of a URI, or (None, absolute local path): what Ray's
    ``storage_filesystem``/``storage_path`` take, so Ray writes where signray reads."""
    found = absolute(location)
    if isinstance(found, RemotePath):
        return found.fs, found.fs_path
    return None, str(found)


def open_input(location: str | os.PathLike[str] | RemotePath) -> IO[bytes]:
    """A seekable binary reader of a local or object-store file (``np.load`` and
    ``torch.load`` accept it). Raises FileNotFoundError for a missing file."""
    return as_location(location).open("rb")


# ---------------------------------------------------------------- preflight, before Ray starts

# Seconds a preflight request may take; one retry (an unreachable store fails in seconds, not
# after the SDK's default ~3 attempts x 3 s of "low speed" timeouts).
PREFLIGHT_CONNECT_S = 3.0
PREFLIGHT_REQUEST_S = 3.0
PREFLIGHT_ATTEMPTS = 2

_AWS_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)  # fmt: skip


def _preflight_filesystem(path: RemotePath):
    """The store's filesystem with short timeouts and one retry (S3); as opened otherwise."""
    from pyarrow import fs as pafs

    store = path.fs
    if isinstance(store, pafs.S3FileSystem):
        options = dict(store.__reduce__()[1][0])  # the settings from_uri resolved
        options.update(
            connect_timeout=PREFLIGHT_CONNECT_S,
            request_timeout=PREFLIGHT_REQUEST_S,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=PREFLIGHT_ATTEMPTS),
        )
        return pafs.S3FileSystem(**options)
    return store


def _endpoint(path: RemotePath) -> str:
    from pyarrow import fs as pafs

    if isinstance(path.fs, pafs.S3FileSystem):
        override = path.fs.__reduce__()[1][0].get("endpoint_override")
        return override or "AWS S3"
    return path._root


def _no_aws_credentials() -> bool:
    home = Path.home() / ".aws"
    files = [home / "credentials", home / "config"]
    return not any(os.environ.get(v) for v in _AWS_CREDENTIALS) and not any(
        f.is_file() for f in files
    )


def explain_error(err: BaseException, location: str | os.PathLike[str] | RemotePath) -> str:
    """What a failed storage request means for the user, and what to check."""
    text = " ".join(str(err).split())
    found = as_location(location)
    if not isinstance(found, RemotePath):
        return f"{found}: {getattr(err, 'strerror', None) or text}"
    s3 = found._root.startswith("s3://")
    if any(k in text for k in ("NETWORK_CONNECTION", "curlCode", "Could not connect")):
        hint = "check the URI, AWS_ENDPOINT_URL and the network" if s3 else "check the network"
        return f"cannot reach the object store at {_endpoint(found)}: {text} ({hint})"
    if "NO_SUCH_BUCKET" in text or ("not found" in text.lower() and "bucket" in text.lower()):
        bucket = found._root.partition("://")[2]
        return f"bucket {bucket!r} does not exist at {_endpoint(found)} (create it first)"
    if s3 and _no_aws_credentials():
        return (
            f"the object store refused the request and no AWS credentials were found (set "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials; "
            f"an instance role needs none of them): {text}"
        )
    if any(k in text for k in ("ACCESS_DENIED", "HTTP status 403", "HTTP status 401")):
        return f"access denied by the object store (check the credentials and their rights): {text}"
    return text


def writable_problem(location: str | os.PathLike[str] | RemotePath, flag: str) -> str | None:
    """Why `flag`'s folder cannot be written, found in seconds and creating nothing; None if it
    can. Locally: its nearest existing ancestor must be a writable folder. On an object store:
    the bucket must exist and accept (then delete) a probe object."""
    found = as_location(location)
    if isinstance(found, RemotePath):
        return _remote_write_problem(found, flag)
    existing = found.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"`{flag}` {found} cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"`{flag}` {found} is not writable: {existing} does not allow writing"
    return None


def _remote_write_problem(path: RemotePath, flag: str) -> str | None:
    from pyarrow.fs import FileType

    try:
        fs = _preflight_filesystem(path)
        bucket = path.fs_path.split("/")[0]
        if fs.get_file_info(bucket).type == FileType.NotFound:
            return f"`{flag}` {path}: bucket {bucket!r} does not exist at {_endpoint(path)}"
        probe = f"{path.fs_path}/.signray-probe-{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as f:
            f.write(b"")
        fs.delete_file(probe)
    except (OSError, ValueError) as err:
        return f"`{flag}` {path}: {explain_error(err, path)}"
    return None
