"""A real S3 API for the tests: a ``moto_server`` process on a loopback port.

No MinIO server installs here; ``moto[server]`` serves the S3 API over HTTP, signatures
and all. The server starts with ``INITIAL_NO_AUTH_ACTION_COUNT=3``: the first three
requests (create an IAM user, give it an S3 policy, make its access key) go through
unauthenticated, every request after them is checked against IAM, so wrong keys are
refused as a real object store refuses them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.ports import raise_if_port_taken

#: Unauthenticated requests the setup below makes before IAM checks start (keep in step).
SETUP_ACTIONS = 3


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint and a key pair it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a client of this server needs."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }


def _moto_binary() -> str:
    return str(Path(sys.executable).with_name("moto_server"))


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``moto_server`` on ``127.0.0.1:port``; return once it answers HTTP."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            # /moto-api/ is moto's own dashboard: not an AWS action, so not counted.
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise_if_port_taken(log, f"moto_server on port {port}")
    raise RuntimeError(f"moto_server did not start on port {port}: {log.read_text()[-2000:]}")


def make_user(endpoint_url: str, region: str = "us-east-1") -> tuple[str, str]:
    """Create an IAM user allowed every S3 action; return its (key id, secret)."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.create_user(UserName="flywheel")
    iam.put_user_policy(UserName="flywheel", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="flywheel")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
