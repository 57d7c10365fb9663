"""A real S3-compatible server for the tests: moto in server mode on 127.0.0.1, in its own process.

Importable as ``s3server`` from any test module (pytest puts ``tests/`` on ``sys.path``). The
`s3` fixture in conftest.py starts one per session; tests that need a server that checks
credentials (``open_actions``) start their own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# What a client needs to reach the server: the usual AWS variables, never the real AWS.
CLIENT_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no probing of 169.254.169.254 for credentials
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on a free loopback port; `stop()` kills it (its pid only).

    With `open_actions` = N, the server checks credentials from its N+1-th request on (moto
    accepts anything by default): the first N set up, e.g. create a bucket.
    """

    def __init__(self, log_dir: Path, *, open_actions: int | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **CLIENT_ENV}
        if open_actions is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(open_actions)
        self.log = (log_dir / f"moto-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not start, see {self.log.name}") from None
                time.sleep(0.2)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client of this server (processes started with it, or os.environ)."""
        return {**CLIENT_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Object keys, without the empty ``folder/`` markers pyarrow (and Ray) create."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return sorted(k for k in keys if not k.endswith("/"))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def upload_dir(self, folder: Path, bucket: str, prefix: str) -> None:
        client = self.client()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CLIENT_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CLIENT_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": CLIENT_ENV["AWS_DEFAULT_REGION"],
    }
