"""Storage by URL (tasks/io/storage.py) against a real S3 API: one moto_server process for the module.

Also: file:// URLs and bare paths behave as the local writes always did, and a recognisable fake secret
never appears in an error message or its traceback.
"""

import os
import traceback
import uuid

import numpy as np
import pytest

from selectflow.tasks.io import storage
from selectflow.tasks.io.storage import StorageError
from tests.s3_server import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, all_keys, make_bucket, s3_fixture

s3_endpoint = s3_fixture("module")


@pytest.fixture
def bucket(s3_endpoint):
    """A fresh, empty bucket per test; yields (endpoint, bucket name)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    make_bucket(s3_endpoint, name)
    return s3_endpoint, name


def _no_secret(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    assert FAKE_SECRET_KEY not in text
    assert FAKE_ACCESS_KEY not in text
    return str(exc)


# ------------------------------------------------------------------------------------------ URLs


def test_url_helpers():
    assert storage.is_remote("s3://b/k") and storage.is_remote("gs://b/k") and storage.is_remote("S3://b/k")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x")
    assert not storage.is_remote("relative/x") and not storage.is_remote(os.path.join("C:", "x"))
    assert storage.join("s3://b/a/", "c", "/d.npy") == "s3://b/a/c/d.npy"
    assert storage.join("file:///tmp/a", "b") == "file:///tmp/a/b"
    assert storage.join("/tmp/a", "b") == os.path.join("/tmp/a", "b")
    assert storage.local_path("file:///tmp/a/b") == storage.local_path("/tmp/a/b")
    assert storage.name("s3://b/a/c.npy") == "c.npy" and storage.parent("s3://b/a/c.npy") == "s3://b/a"


def test_redact(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    text = (f"key {FAKE_SECRET_KEY} in s3://user:{FAKE_SECRET_KEY}@bucket/x and "
            "https://h/o?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIAXX%2F2026&x=1")
    out = storage.redact(text)
    assert FAKE_SECRET_KEY not in out and "abcdef0123" not in out and "AKIAXX" not in out
    assert "s3://***@bucket/x" in out and "x=1" in out


def test_endpoint_comes_from_the_environment(bucket):
    """botocore >= 1.31 reads AWS_ENDPOINT_URL itself; storage passes it explicitly too. Either way the
    object lands on the moto server named only by the environment."""
    import botocore

    endpoint, b = bucket
    assert tuple(int(x) for x in botocore.__version__.split(".")[:2]) >= (1, 31)
    assert storage.s3_endpoint() == endpoint == os.environ["AWS_ENDPOINT_URL"]
    storage.write_bytes(f"s3://{b}/probe.txt", b"hi")
    assert all_keys(endpoint, b) == ["probe.txt"]
    import s3fs  # and the botocore in use honours it unaided: a plain client finds the same object

    assert s3fs.S3FileSystem(skip_instance_cache=True).cat_file(f"{b}/probe.txt") == b"hi"


# ----------------------------------------------------------------------------------- S3 behaviour


def test_round_trip(bucket):
    endpoint, b = bucket
    root = f"s3://{b}/cache"
    assert not storage.exists(root) and storage.listdir(root) == []
    storage.write_bytes(storage.join(root, "a.bin"), b"\x00\x01payload")
    storage.write_text(storage.join(root, "sub", "m.json"), '{"k": 1}')
    storage.write_bytes(storage.join(root, "ab.bin"), b"x")
    assert storage.read_bytes(f"{root}/a.bin") == b"\x00\x01payload"
    assert storage.read_text(f"{root}/sub/m.json") == '{"k": 1}'
    assert storage.size(f"{root}/a.bin") == 9
    assert storage.exists(f"{root}/a.bin") and storage.exists(root) and storage.isdir(f"{root}/sub")
    assert storage.listdir(root) == ["a.bin", "ab.bin", "sub"]
    assert storage.glob(f"{root}/*.bin") == [f"{root}/a.bin", f"{root}/ab.bin"]
    with storage.open_read(f"{root}/a.bin") as fh:
        assert fh.read(2) == b"\x00\x01"
        fh.seek(4)
        assert fh.read() == b"yload"
    with pytest.raises(FileNotFoundError, match=f"s3://{b}/cache/missing"):
        storage.read_bytes(f"{root}/missing")
    storage.remove(f"{root}/a")  # a prefix of nothing: "a.bin" and "ab.bin" are not under "a/"
    assert storage.listdir(root) == ["a.bin", "ab.bin", "sub"]
    storage.remove(f"{root}/a.bin")
    storage.remove(f"{root}/sub")
    assert all_keys(endpoint, b) == ["cache/ab.bin"]
    storage.remove(root)
    assert all_keys(endpoint, b) == []
    storage.remove(root)  # missing is fine ...
    with pytest.raises(FileNotFoundError):
        storage.remove(root, missing_ok=False)  # ... unless told
    with pytest.raises(StorageError, match="whole bucket"):
        storage.remove(f"s3://{b}")


def test_atomic_write_publishes_only_on_success(bucket):
    endpoint, b = bucket
    url = f"s3://{b}/matrix/k.npy"
    with pytest.raises(RuntimeError, match="boom"):
        with storage.atomic_write(url, suffix=".npy") as tmp:
            np.save(tmp, np.ones(3))
            raise RuntimeError("boom")
    assert all_keys(endpoint, b) == []  # nothing at the final key, no temporary key

    with storage.atomic_write(url, suffix=".npy") as tmp:
        assert tmp.name.endswith(".npy")
        np.save(tmp, np.arange(4))
    assert all_keys(endpoint, b) == ["matrix/k.npy"]  # no temporary key left after success
    assert not tmp.exists()  # nor a local temporary

    with pytest.raises(RuntimeError):  # a failed rewrite leaves the old object whole
        with storage.atomic_write(url) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError
    assert np.load(storage.local_copy(url)).tolist() == [0, 1, 2, 3]
    assert all_keys(endpoint, b) == ["matrix/k.npy"]


def test_failed_upload_leaves_no_temporary_key(bucket, monkeypatch):
    """The copy to the final key fails after the temporary upload: the temporary key is deleted."""
    endpoint, b = bucket
    url = f"s3://{b}/out/x.bin"
    fs, _ = storage._filesystem(url)

    def broken_copy(*args, **kwargs):
        raise OSError("copy failed")

    monkeypatch.setattr(fs, "cp_file", broken_copy)
    with pytest.raises(StorageError, match="copy failed"):
        storage.write_bytes(url, b"data")
    assert all_keys(endpoint, b) == []


def test_local_copy_caches_by_etag_and_refreshes(bucket, tmp_path):
    _, b = bucket
    url = f"s3://{b}/store/shard-1.emb.npy"
    storage.write_bytes(url, b"version one")
    first = storage.local_copy(url, tmp_path)
    assert first.read_bytes() == b"version one" and first.name == "shard-1.emb.npy"
    stamp = first.stat().st_mtime_ns
    again = storage.local_copy(url, tmp_path)
    assert again == first and again.stat().st_mtime_ns == stamp  # not downloaded again

    storage.write_bytes(url, b"version two, longer")
    fresh = storage.local_copy(url, tmp_path)
    assert fresh != first and fresh.read_bytes() == b"version two, longer"
    assert not first.exists()  # the stale copy is dropped
    assert [p.name for p in fresh.parent.parent.iterdir()] == [fresh.parent.name]
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        storage.local_copy(f"s3://{b}/store/missing.npy", tmp_path)


def test_np_load_mmap_and_faiss_on_a_local_copy(bucket, tmp_path):
    import faiss

    _, b = bucket
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    with storage.atomic_write(f"s3://{b}/matrix/m.npy", suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, x, allow_pickle=False)
    m = np.load(storage.local_copy(f"s3://{b}/matrix/m.npy", tmp_path), mmap_mode="r", allow_pickle=False)
    assert isinstance(m, np.memmap) and np.array_equal(m[10:20], x[10:20])

    index = faiss.IndexFlatIP(8)
    index.add(x)
    with storage.atomic_write(f"s3://{b}/index/i.faiss", suffix=".faiss") as tmp:
        faiss.write_index(index, str(tmp))
    back = faiss.read_index(str(storage.local_copy(f"s3://{b}/index/i.faiss", tmp_path)))
    assert back.ntotal == 50


def test_staged_folder_publishes_the_manifest_last(bucket, monkeypatch):
    endpoint, b = bucket
    out = f"s3://{b}/out"
    storage.write_text(f"{out}/manifest.json", "old")
    order, real_publish = [], storage.publish

    def recording(local, url, move=False):
        order.append((storage.name(url), storage.exists(f"{out}/manifest.json")))
        return real_publish(local, url, move=move)

    monkeypatch.setattr(storage, "publish", recording)
    with pytest.raises(RuntimeError):
        with storage.staged_folder(out) as folder:
            (folder / "selected.parquet").write_bytes(b"p")
            raise RuntimeError
    assert order == [] and all_keys(endpoint, b) == ["out/manifest.json"]  # a failed block publishes nothing

    with storage.staged_folder(out) as folder:
        (folder / "manifest.json").write_text("new")
        (folder / "selected.parquet").write_bytes(b"p")
        (folder / "report.json").write_text("{}")
    # the old manifest is retired before anything is replaced; the new one lands last
    assert order == [("report.json", False), ("selected.parquet", False), ("manifest.json", False)]
    assert storage.read_text(f"{out}/manifest.json") == "new"
    assert all_keys(endpoint, b) == ["out/manifest.json", "out/report.json", "out/selected.parquet"]


# ------------------------------------------------------------------------------ errors and secrets


def test_errors_name_the_url_say_what_to_do_and_hold_no_secret(bucket, monkeypatch, tmp_path):
    _, b = bucket
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET_KEY

    with pytest.raises(StorageError) as e:
        storage.write_bytes("s3://no-such-bucket-x/k", b"x")
    msg = _no_secret(e.value)
    assert "s3://no-such-bucket-x/k" in msg and "does not exist" in msg and "create it" in msg
    with pytest.raises(StorageError) as e:
        storage.read_bytes("s3://no-such-bucket-x/k")
    assert "no-such-bucket-x" in _no_secret(e.value)
    assert not storage.exists("s3://no-such-bucket-x/k")

    with pytest.raises(FileNotFoundError) as e:
        storage.local_copy(f"s3://{b}/nothing.npy", tmp_path)
    assert f"s3://{b}/nothing.npy" in _no_secret(e.value)

    with pytest.raises(StorageError) as e:  # credentials in a URL are refused, and not echoed
        storage.read_bytes(f"s3://{FAKE_ACCESS_KEY}:{FAKE_SECRET_KEY}@{b}/k")
    assert "environment" in _no_secret(e.value)

    with monkeypatch.context() as mp:  # no credentials at all
        mp.delenv("AWS_ACCESS_KEY_ID")
        mp.delenv("AWS_SECRET_ACCESS_KEY")
        with pytest.raises(StorageError) as e:
            storage.read_bytes(f"s3://{b}/k")
        msg = _no_secret(e.value)
        assert "no credentials" in msg and "AWS_ACCESS_KEY_ID" in msg and f"s3://{b}/k" in msg

    with monkeypatch.context() as mp:  # an endpoint nobody answers on
        from tests.s3_server import free_port

        mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        mp.setenv("AWS_MAX_ATTEMPTS", "1")
        with pytest.raises(StorageError) as e:
            storage.write_bytes(f"s3://{b}/k", b"x")
        msg = _no_secret(e.value)
        assert "cannot reach" in msg and "AWS_ENDPOINT_URL" in msg


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    import sys

    storage.clear_cache()
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(StorageError, match=r"pip install 'selectflow\[s3\]'"):
        storage.read_bytes("s3://b/k")
    with pytest.raises(StorageError, match=r"pip install 'selectflow\[s3\]'"):
        with storage.atomic_write("s3://b/k"):
            pass
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(StorageError, match="pip install gcsfs"):
            storage.exists("gs://b/k")


# --------------------------------------------------------------------- local: as it always was


@pytest.fixture(params=["bare", "file"])
def local_root(request, tmp_path):
    return str(tmp_path / "cache") if request.param == "bare" else f"file://{tmp_path / 'cache'}"


def test_local_paths_behave_as_before(local_root, tmp_path):
    folder = tmp_path / "cache"
    url = storage.join(local_root, "matrix", "k.npy")
    assert not storage.is_remote(url)
    with pytest.raises(RuntimeError):
        with storage.atomic_write(url, suffix=".npy") as tmp:
            assert tmp.parent == folder / "matrix" and tmp.name.startswith(".k.npy.")  # atomic_path's names
            np.save(tmp, np.ones(2))
            raise RuntimeError
    assert list((folder / "matrix").iterdir()) == []
    with storage.atomic_write(url, suffix=".npy") as tmp:
        np.save(tmp, np.arange(3))
    assert [p.name for p in (folder / "matrix").iterdir()] == ["k.npy"]
    assert storage.local_copy(url, tmp_path / "scratch") == folder / "matrix" / "k.npy"  # the file itself
    assert not (tmp_path / "scratch").exists()
    assert np.load(storage.local_copy(url), mmap_mode="r").tolist() == [0, 1, 2]
    assert storage.exists(url) and storage.size(url) == (folder / "matrix" / "k.npy").stat().st_size
    assert storage.listdir(local_root) == ["matrix"] and storage.listdir(storage.join(local_root, "nope")) == []
    assert storage.glob(storage.join(local_root, "matrix", "*.npy")) == [url]

    with storage.staged_folder(storage.join(local_root, "out")) as staged:
        (staged / "manifest.json").write_text("{}")
        (staged / "selected.parquet").write_bytes(b"p")
    assert sorted(p.name for p in folder.iterdir()) == ["matrix", "out"]  # no staging folder left
    assert storage.listdir(storage.join(local_root, "out")) == ["manifest.json", "selected.parquet"]
    storage.remove(storage.join(local_root, "out"))
    storage.remove(url)
    assert storage.listdir(local_root) == ["matrix"] and storage.listdir(storage.join(local_root, "matrix")) == []
