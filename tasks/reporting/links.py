"""Artifact keys and report links that work from the Prefect UI.

slug           text as a Prefect key part: lowercase letters, digits and single dashes
artifact_key   '<kind>-<deployment>-<sampler>', so each deployment and sampler keeps its own artifact history
https_url      the https form of an object-store URL (s3://, gs://), or a presigned one where the storage layer offers it
Plain code: tasks/report.py asks Prefect for the deployment name and publishes the artifacts.
"""

import os
import re
from urllib.parse import quote

from ..io import storage

CLI = "cli"  # the deployment part of a key for runs started outside a deployment (CLI, Python, tests)


def slug(text: object) -> str:
    """'Nightly kMQ (prod)' -> 'nightly-kmq-prod': Prefect's key rules (lowercase letters, numbers and dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unnamed"


def artifact_key(kind: str, deployment: str | None, sampler: str) -> str:
    """'selection-summary-nightly-kmq-kmeans': the artifact kind, the deployment (or 'cli') and the sampler."""
    return f"{slug(kind)}-{slug(deployment or CLI)}-{slug(sampler)}"


def https_url(url: str, expires_seconds: int = 7 * 24 * 3600) -> str:
    """A URL a browser opens for an object-store URL: presigned when tasks/io/storage.py offers `presigned_url`,
    else the bucket's https (or configured endpoint's) form. A URL already http(s), or of another store, is returned as is.

    S3 with an endpoint in the environment (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, e.g. MinIO): path style on that
    endpoint; AWS: virtual-hosted style, regional when AWS_REGION or AWS_DEFAULT_REGION is set; gs://: storage.googleapis.com.
    """
    presign = getattr(storage, "presigned_url", None)
    if presign is not None:
        try:
            return presign(url, expires_seconds)
        except Exception:  # noqa: BLE001 - a link is a convenience; fall back to the plain https form
            pass
    proto = storage.scheme(url)
    if proto not in ("s3", "s3a", "gs", "gcs"):
        return url
    bucket, _, key = str(url).split("://", 1)[1].partition("/")
    key = quote(key, safe="/")
    if proto in ("gs", "gcs"):
        return f"https://storage.googleapis.com/{bucket}/{key}"
    endpoint = storage.s3_endpoint()
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{key}"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    host = f"{bucket}.s3.{region}.amazonaws.com" if region else f"{bucket}.s3.amazonaws.com"
    return f"https://{host}/{key}"
