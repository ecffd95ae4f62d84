"""Storage by URL: one small API over local paths, file:// and object stores (s3://, gs://, any fsspec URL).

Every function takes a URL or a local path. A bare path and a file:// URL are the local disk and behave
exactly as before (pathlib and os.replace); anything else goes through fsspec: s3fs for s3:// (the `s3`
extra: pip install 'selectflow[s3]'), gcsfs for gs://.

Writes are atomic where the store allows and look atomic where it does not:
  local:  write a temporary file beside the final one, then os.replace it into place (tasks/io/atomic.py);
  remote: write a local temporary file, upload it to a temporary key beside the final one
          (`.<name>.<random>.tmp<suffix>`, the same pattern as the local temporaries), copy it to the final
          key and delete the temporary key. An object store has no rename; a reader never sees a partial
          object at the final key, and a failed block leaves nothing there.
A folder of several files (a run's outputs, a corpus entry) is published with `publish_last`: every file
first, the manifest last, after the old manifest has been retired. A folder without its manifest is an
incomplete write, whatever else it holds.

Credentials and the endpoint come only from the standard environment (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_ENDPOINT_URL[_S3], AWS_DEFAULT_REGION, and the
shared AWS config files), never from URLs or options: a URL carrying `user:password@` is refused. Every
message this module raises goes through `redact`, and translated errors drop their chained cause, so no
credential is formatted into an error, a log line or a manifest.

Plain Python: no Prefect.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from ..errors import SelectflowError
from .atomic import atomic_path

LOCAL_SCHEMES = frozenset({"", "file", "local"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_INSTALL = {
    "s3": "pip install 'selectflow[s3]' (s3fs)",
    "s3a": "pip install 'selectflow[s3]' (s3fs)",
    "gs": "pip install gcsfs",
    "gcs": "pip install gcsfs",
}
# Environment variables whose values are secrets (or identify one); `redact` removes their values.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
# Everything that changes which S3 client we build: a filesystem is cached per value of these (and per process).
_S3_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
)


class StorageError(SelectflowError):
    """A URL cannot be used as given: missing package, credentials, bucket or permission, or an unreachable
    endpoint. The message names the URL and what to do, and never holds a credential."""


# ---------------------------------------------------------------------------------------------- URLs


def scheme(url: str | os.PathLike) -> str:
    """The URL's scheme in lower case ('' for a bare local path)."""
    m = _SCHEME.match(str(url))
    return m.group(1).lower() if m else ""


def is_remote(url: str | os.PathLike) -> bool:
    """True for an object-store URL (s3://, gs://, ...); False for a bare path or a file:// URL."""
    return scheme(url) not in LOCAL_SCHEMES


def local_path(url: str | os.PathLike) -> Path:
    """The local Path of a bare path or file:// URL (user folder expanded); refuses a remote URL."""
    text = str(url)
    if is_remote(text):
        raise StorageError(redact(f"{text} is not a local path; use local_copy() to read it from a file."))
    if scheme(text):
        rest = text.split("://", 1)[1]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        text = rest or "/"
    return Path(text).expanduser()


def join(url: str | os.PathLike, *parts: str) -> str:
    """`url` joined with path parts ('/'-separated for URLs, os.path for bare paths); the scheme is kept."""
    text = str(url)
    if not scheme(text):
        return os.path.join(text, *parts)
    out = text.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def name(url: str | os.PathLike) -> str:
    """The last component of a URL or path."""
    return posixpath.basename(str(url).rstrip("/")) if scheme(url) else Path(url).name


def parent(url: str | os.PathLike) -> str:
    """The URL or path one level up (the scheme is kept)."""
    text = str(url)
    if not scheme(text):
        return str(Path(text).parent)
    head, _, _ = text.rstrip("/").rpartition("/")
    return head


# ------------------------------------------------------------------------------------------ secrets


def redact(text: Any) -> str:
    """`text` with every credential removed: the values of the secret environment variables, any
    `user:password@` in a URL, and signature/token query parameters of presigned URLs."""
    text = str(text)
    for var in SECRET_ENV:
        value = os.environ.get(var)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    text = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@", r"\1***@", text)
    text = re.sub(
        r"(?i)\b(X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|X-Goog-Signature|X-Goog-Credential|"
        r"Signature|AWSAccessKeyId|sig|token|access_token)=[^&\s'\"]+",
        r"\1=***", text)
    return text


def _check_url(url: str) -> None:
    text = str(url)
    if "::" in text.split("://", 1)[0]:
        raise StorageError(redact(f"{text}: chained fsspec URLs (a::b://) are not supported; pass a plain URL."))
    if scheme(text) and "@" in text.split("://", 1)[1].split("/", 1)[0]:
        raise StorageError(
            f"{redact(text)}: credentials in a URL are refused (they would end up in manifests and logs); "
            "pass them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE for s3://).")


# ----------------------------------------------------------------------------------- filesystems

_FS_LOCK = threading.Lock()
_FS_CACHE: dict[tuple, Any] = {}


def s3_endpoint() -> str | None:
    """The S3 endpoint the environment names (AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL), or None for AWS.

    botocore >= 1.31 reads these itself; they are passed explicitly as well so that the behaviour does
    not depend on the botocore version s3fs happens to bring.
    """
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _import_backend(proto: str, url: str):
    try:
        if proto in ("s3", "s3a"):
            import s3fs

            return s3fs
        import fsspec

        return fsspec.get_filesystem_class(proto)
    except (ImportError, ValueError) as exc:
        hint = _INSTALL.get(proto) or redact(exc)
        raise StorageError(f"{redact(url)}: {proto}:// URLs need an extra package: {hint}.") from None


def _filesystem(url: str):
    """(fsspec filesystem, path inside it) for a remote URL. Filesystems are cached per process and per
    value of the environment that configures them, and never cache listings (other processes write too)."""
    _check_url(url)
    proto = scheme(url)
    backend = _import_backend(proto, url)
    env = tuple(os.environ.get(k) for k in _S3_ENV) if proto in ("s3", "s3a") else ()
    key = (proto, os.getpid(), hashlib.sha256(repr(env).encode()).hexdigest())
    with _FS_LOCK:
        fs = _FS_CACHE.get(key)
        if fs is None:
            if proto in ("s3", "s3a"):
                client_kwargs = {}
                endpoint = s3_endpoint()
                if endpoint:
                    client_kwargs["endpoint_url"] = endpoint
                fs = backend.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                                          client_kwargs=client_kwargs)
            else:
                fs = backend(skip_instance_cache=True, use_listings_cache=False)
            _FS_CACHE[key] = fs
    return fs, fs._strip_protocol(url)


def clear_cache() -> None:
    """Forget the cached filesystems (after the credentials or endpoint in the environment changed in a way
    that `_S3_ENV` does not cover)."""
    with _FS_LOCK:
        _FS_CACHE.clear()


def _bucket(url: str) -> str:
    rest = str(url).split("://", 1)[1] if "://" in str(url) else str(url)
    return rest.split("/", 1)[0]


def _where(url: str) -> str:
    if scheme(url) in ("s3", "s3a"):
        return f"at {s3_endpoint()}" if s3_endpoint() else "on AWS"
    return f"on {scheme(url)}://"


@contextlib.contextmanager
def _translated(url: str, action: str) -> Iterator[None]:
    """Turn a remote store's errors into ones that name the URL and say what to do, without credentials.

    A missing object stays a FileNotFoundError; everything a user must fix (bucket, credentials,
    permission, endpoint, package) becomes a StorageError. Chained causes are dropped: botocore messages
    and request dumps are not ours to vouch for.
    """
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        text = str(exc)
        if "bucket does not exist" in text or "NoSuchBucket" in text:
            bucket = _bucket(url)
            raise StorageError(redact(
                f"{action} {url}: the bucket '{bucket}' does not exist {_where(url)}; create it "
                f"(e.g. `aws s3 mb s3://{bucket}`) or fix the URL.")) from None
        raise FileNotFoundError(errno.ENOENT, redact(f"{action} {url}: no such object or folder"), redact(url)) \
            from None
    except PermissionError as exc:
        raise StorageError(redact(
            f"{action} {url}: access denied ({exc}); check the credentials in the environment "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy.")) from None
    except Exception as exc:  # noqa: BLE001 - classified by name: botocore may not be importable
        kind = type(exc).__name__
        if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                    "NoAuthTokenError", "DefaultCredentialsError"):
            raise StorageError(redact(
                f"{action} {url}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) in the environment, and AWS_ENDPOINT_URL for an S3-compatible store "
                "(for gs://: GOOGLE_APPLICATION_CREDENTIALS).")) from None
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                    "ReadTimeoutError", "ClientConnectorError") or isinstance(exc, ConnectionError):
            raise StorageError(redact(
                f"{action} {url}: cannot reach the store {_where(url)} ({kind}); check AWS_ENDPOINT_URL "
                "and the network.")) from None
        if isinstance(exc, OSError) or kind in ("ClientError", "ParamValidationError", "BotoCoreError"):
            raise StorageError(redact(f"{action} {url} failed: {kind}: {exc}")) from None
        raise


# ------------------------------------------------------------------------------------------- reads


def exists(url: str | os.PathLike) -> bool:
    """Whether a file, object or non-empty folder/prefix is at `url` (False for a missing bucket)."""
    if not is_remote(url):
        return local_path(url).exists()
    fs, path = _filesystem(str(url))
    with _translated(str(url), "checking"):
        return bool(fs.exists(path))


def isdir(url: str | os.PathLike) -> bool:
    """Whether `url` is a folder (remote: a prefix holding at least one object)."""
    if not is_remote(url):
        return local_path(url).is_dir()
    fs, path = _filesystem(str(url))
    with _translated(str(url), "checking"):
        return bool(fs.isdir(path))


def size(url: str | os.PathLike) -> int:
    """The size in bytes of the file or object at `url` (FileNotFoundError when missing)."""
    if not is_remote(url):
        return local_path(url).stat().st_size
    fs, path = _filesystem(str(url))
    with _translated(str(url), "reading"):
        return int(fs.size(path))


def listdir(url: str | os.PathLike) -> list[str]:
    """Sorted names (not paths) of the entries directly under the folder `url`; [] when it is missing."""
    if not is_remote(url):
        folder = local_path(url)
        return sorted(os.listdir(folder)) if folder.is_dir() else []
    fs, path = _filesystem(str(url))
    try:
        with _translated(str(url), "listing"):
            entries = fs.ls(path.rstrip("/"), detail=False)
    except FileNotFoundError:
        return []
    return sorted({posixpath.basename(e.rstrip("/")) for e in entries} - {""})


def glob(pattern: str | os.PathLike) -> list[str]:
    """Sorted URLs (or paths) matching a glob pattern, in the pattern's own style (bare, file:// or remote)."""
    text = str(pattern)
    if not is_remote(text):
        import glob as _glob

        found = sorted(_glob.glob(str(local_path(text))))
        return [f"file://{p}" for p in found] if scheme(text) else found
    fs, path = _filesystem(text)
    with _translated(text, "listing"):
        found = fs.glob(path)
    return sorted(f"{scheme(text)}://{p}" for p in found)


def read_bytes(url: str | os.PathLike) -> bytes:
    """The whole content of the file or object at `url`."""
    if not is_remote(url):
        return local_path(url).read_bytes()
    fs, path = _filesystem(str(url))
    with _translated(str(url), "reading"):
        return fs.cat_file(path)


def read_text(url: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(url).decode(encoding)


@contextlib.contextmanager
def open_read(url: str | os.PathLike, block_size: int | None = None) -> Iterator[IO[bytes]]:
    """A binary stream over the file or object at `url` (remote: read in blocks, seekable)."""
    if not is_remote(url):
        with open(local_path(url), "rb") as fh:
            yield fh
        return
    fs, path = _filesystem(str(url))
    kwargs = {"block_size": block_size} if block_size else {}
    with _translated(str(url), "reading"):
        fh = fs.open(path, "rb", **kwargs)
    try:
        yield fh
    finally:
        fh.close()


def version(url: str | os.PathLike) -> str:
    """An identifier of the object's current content: ETag (or generation/mtime) and size. It changes when
    the object is overwritten."""
    if not is_remote(url):
        st = local_path(url).stat()
        return f"{st.st_mtime_ns}-{st.st_size}"
    fs, path = _filesystem(str(url))
    with _translated(str(url), "reading"):
        info = fs.info(path)
    return _version_of(info, str(url))


def _version_of(info: dict, url: str) -> str:
    if info.get("type") == "directory":
        raise IsADirectoryError(errno.EISDIR, redact(f"{url} is a folder, not an object"), redact(url))
    tag = (info.get("ETag") or info.get("etag") or info.get("generation") or info.get("md5Hash")
           or info.get("LastModified") or info.get("mtime") or info.get("updated") or "")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{tag}".strip('"')) + f"-{int(info.get('size') or 0)}"


def default_scratch() -> Path:
    """Where local copies of remote objects go unless told: $SELECTFLOW_SCRATCH, else a per-user temp folder."""
    env = os.environ.get("SELECTFLOW_SCRATCH")
    if env:
        return Path(env).expanduser()
    return Path(tempfile.gettempdir()) / f"selectflow-scratch-{os.getuid() if hasattr(os, 'getuid') else 'u'}"


def local_copy(url: str | os.PathLike, scratch: str | os.PathLike | None = None) -> Path:
    """A local file holding the object at `url`, for readers that need a real file (np.load with mmap_mode,
    faiss.read_index, polars/pyarrow on large files).

    A local path is returned as it is. A remote object is downloaded once into
    `<scratch>/<hash of url>/<version>/<name>` (version: ETag and size), atomically, and reused while the
    object is unchanged; an overwritten object is downloaded again and older copies are dropped (a process
    still holding an old copy mapped keeps reading it: POSIX unlink).
    """
    if not is_remote(url):
        return local_path(url)
    text = str(url)
    fs, path = _filesystem(text)
    base = Path(scratch).expanduser() if scratch else default_scratch()
    base = base / hashlib.sha256(text.encode()).hexdigest()[:24]
    filename = posixpath.basename(path.rstrip("/")) or "object"
    for _ in range(3):
        with _translated(text, "reading"):
            info = fs.info(path)
        current = _version_of(info, text)
        target = base / current / filename
        if target.is_file() and target.stat().st_size == int(info.get("size") or 0):
            return target
        try:
            with atomic_path(target, suffix=Path(filename).suffix) as tmp:
                with _translated(text, "downloading"):
                    fs.get_file(path, str(tmp))
            with _translated(text, "reading"):
                after = _version_of(fs.info(path), text)
        except FileNotFoundError:
            if target.parent.exists():
                raise
            continue  # another process dropped this version folder under us: look again
        if after != current:  # overwritten while we downloaded: what we have may be either version
            shutil.rmtree(target.parent, ignore_errors=True)
            continue
        for old in base.iterdir():
            if old.name != current and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return target
    raise StorageError(redact(f"reading {text}: the object kept changing while it was downloaded; retry when "
                              "nothing else is writing it."))


# ------------------------------------------------------------------------------------------ writes


def makedirs(url: str | os.PathLike) -> None:
    """Create the folder `url` (local); object stores have no folders, so nothing is done there."""
    if not is_remote(url):
        local_path(url).mkdir(parents=True, exist_ok=True)
    else:
        _filesystem(str(url))  # still check the URL and the backend


def _temp_key(path: str, suffix: str = "") -> str:
    head, _, tail = path.rstrip("/").rpartition("/")
    return f"{head}/.{tail}.{uuid.uuid4().hex[:12]}.tmp{suffix}"


def publish(local: str | os.PathLike, url: str | os.PathLike, move: bool = False) -> str:
    """Put the complete local file `local` at `url`, atomically (see the module docstring).

    Local target: a temporary beside it and os.replace (with move=True and the same file system, `local`
    itself is renamed into place). Remote: upload to a temporary key beside the final one, copy it to the
    final key, delete the temporary key; on error the temporary key is deleted and the final key untouched.
    Returns `url` as a string.
    """
    local = Path(local)
    text = str(url)
    if not is_remote(text):
        final = local_path(text)
        final.parent.mkdir(parents=True, exist_ok=True)
        if move:
            try:
                os.replace(local, final)
                return text
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        with atomic_path(final, suffix=local.suffix) as tmp:
            shutil.copyfile(local, tmp)
        return text
    fs, path = _filesystem(text)
    if "/" not in path.strip("/"):
        raise StorageError(redact(f"writing {text}: a URL must name an object inside the bucket (s3://bucket/key)."))
    tmp_key = _temp_key(path, local.suffix)
    try:
        with _translated(text, "writing"):
            fs.put_file(str(local), tmp_key)
            fs.cp_file(tmp_key, path)
    finally:
        with contextlib.suppress(Exception):
            fs.rm_file(tmp_key)
    if move:
        local.unlink(missing_ok=True)
    return text


@contextlib.contextmanager
def atomic_write(url: str | os.PathLike, suffix: str = "", scratch: str | os.PathLike | None = None
                 ) -> Iterator[Path]:
    """Yield a local temporary path to write; when the block succeeds its content appears at `url`
    complete, and when it raises nothing appears there (and no temporary file or key is left).

    `suffix` is kept at the end of the temporary name, for writers that add or read an extension
    (np.save adds '.npy' to a name without it). `scratch` (remote only): where the local temporary lives.
    """
    text = str(url)
    if not is_remote(text):
        with atomic_path(local_path(text), suffix=suffix) as tmp:
            yield tmp
        return
    _filesystem(text)  # refuse a bad URL or a missing backend before any work is done
    if scratch:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="selectflow-upload-", dir=scratch))
    filename = posixpath.basename(text.rstrip("/")) or "object"
    if suffix and not filename.endswith(suffix):
        filename += suffix
    tmp = folder / filename
    tmp.touch()
    try:
        yield tmp
        publish(tmp, text)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes(url: str | os.PathLike, data: bytes) -> str:
    """Write `data` at `url` atomically."""
    with atomic_write(url) as tmp:
        tmp.write_bytes(data)
    return str(url)


def write_text(url: str | os.PathLike, text: str) -> str:
    return write_bytes(url, text.encode("utf-8"))


def remove(url: str | os.PathLike, missing_ok: bool = True) -> None:
    """Delete the file/object at `url`, or the folder/prefix with everything under it. A bucket itself is
    never deleted."""
    text = str(url)
    if not is_remote(text):
        p = local_path(text)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        elif not missing_ok:
            raise FileNotFoundError(errno.ENOENT, f"removing {text}: no such file or folder", text)
        return
    fs, path = _filesystem(text)
    if "/" not in path.strip("/"):
        raise StorageError(redact(f"removing {text}: refusing to delete a whole bucket; name a prefix inside it."))
    try:
        with _translated(text, "removing"):
            if fs.isfile(path):
                fs.rm_file(path)
            else:
                found = fs.find(path.rstrip("/") + "/")
                if not found:
                    raise FileNotFoundError(path)
                fs.rm(found)
    except FileNotFoundError:
        if not missing_ok:
            raise


# -------------------------------------------------------------------------- folders: manifest last


def publish_last(staging: str | os.PathLike, url: str | os.PathLike, last: Iterable[str] = ("manifest.json",),
                 retire: bool = True, move: bool = False) -> list[str]:
    """Publish every file under the local folder `staging` to the folder `url` (same relative names), each
    atomically, the files named in `last` after all the others and in that order.

    With retire=True the `last` files already at `url` are deleted first, so an old manifest never
    describes a mix of old and new files: until the new manifest lands, the folder reads as incomplete.
    Returns the URLs published, in order.
    """
    staging = Path(staging)
    last = tuple(last)
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    ordered = [f for f in files if f not in last] + [f for f in last if f in files]
    if retire:
        for rel in last:
            remove(join(url, rel))
    done = []
    for rel in ordered:
        done.append(publish(staging / rel, join(url, rel), move=move))
    return done


@contextlib.contextmanager
def staged_folder(url: str | os.PathLike, last: Iterable[str] = ("manifest.json",),
                  scratch: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield an empty local folder to fill; when the block succeeds its files are published under `url`
    with `publish_last` (manifest last), and when it raises nothing is published.

    Local targets are staged beside the final folder (renamed into place file by file); remote ones in
    `scratch` (default: the system temp folder).
    """
    text = str(url)
    if is_remote(text):
        _filesystem(text)
        if scratch:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="selectflow-stage-", dir=scratch))
    else:
        final = local_path(text)
        final.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield folder
        publish_last(folder, text, last=last, move=not is_remote(text))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
