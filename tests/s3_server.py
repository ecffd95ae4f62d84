"""A real S3 API for tests: `moto_server` (moto[server]) started as a separate process on 127.0.0.1.

Not an in-process mock: the code under test talks HTTP to another process through s3fs/botocore, exactly
as it would to S3 or MinIO, with the endpoint and credentials taken from the environment.

    from tests.s3_server import moto_server, s3_environment, make_bucket

    with moto_server() as endpoint, s3_environment(endpoint):
        make_bucket(endpoint, "b")
        ...

`s3_fixture()` builds a pytest fixture (module scope by default) that does both and yields the endpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

# Recognisable fake credentials: a test may assert that they never appear in an error, a log or a manifest.
FAKE_ACCESS_KEY = "AKIAFAKEACCESSKEY0001"
FAKE_SECRET_KEY = "FAKESECRETDONOTLEAK123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        found = shutil.which("moto_server")
        if found is None:
            return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        exe = Path(found)
    return [str(exe), "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def moto_server(timeout: float = 60.0) -> Iterator[str]:
    """Start moto_server on a free loopback port, wait until it answers, yield its endpoint URL, stop it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(_command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f}s") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def s3_environment_values(endpoint: str) -> dict[str, str]:
    """The standard AWS environment pointing at `endpoint`, with the fake credentials, and nothing read from
    the user's ~/.aws or an instance metadata service."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }


_CLEARED = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION")


@contextlib.contextmanager
def s3_environment(endpoint: str) -> Iterator[dict[str, str]]:
    """Set the environment of `s3_environment_values` for the block (and clear other AWS settings)."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for k in _CLEARED:
            mp.delenv(k, raising=False)
        values = s3_environment_values(endpoint)
        for k, v in values.items():
            mp.setenv(k, v)
        yield values


def s3_client(endpoint: str):
    """A boto3 client on the server, for test set-up and inspection (independent of the code under test)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY)


def make_bucket(endpoint: str, name: str) -> str:
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def all_keys(endpoint: str, bucket: str) -> list[str]:
    """Every key in the bucket, temporary ones included."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def s3_fixture(scope: str = "module"):
    """A pytest fixture: one moto server for the scope, the AWS environment set to it; yields the endpoint."""
    import pytest

    @pytest.fixture(scope=scope)
    def _s3_endpoint():
        with moto_server() as endpoint, s3_environment(endpoint):
            yield endpoint

    return _s3_endpoint
