"""A real S3 API on loopback for tests: moto's server mode with throwaway credentials.

The product's code path stays plain boto3; only the endpoint is moto. The
``s3_endpoint`` fixture (tests/conftest.py) wraps :func:`moto_s3`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer

_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@contextmanager
def moto_s3() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yields its endpoint URL."""
    saved = {key: os.environ.get(key) for key in _CREDENTIALS}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_bucket(endpoint: str, name: str):
    """Create bucket ``name`` at ``endpoint``; returns a boto3 client for it."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client
