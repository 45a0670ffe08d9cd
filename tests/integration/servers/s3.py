"""moto's standalone S3 server (a real HTTP S3 API) on loopback, with credentials checked.

Contract:

* ``S3Server(base_dir)`` does no I/O; ``start()`` runs ``python -m moto.server`` (this
  interpreter's, so the virtualenv's moto) on 127.0.0.1 and a free port, logging to
  ``base_dir/moto.log``.
* moto checks no credentials by default. The server is started with
  ``INITIAL_NO_AUTH_ACTION_COUNT=3``: the first three requests are unauthenticated and create an
  IAM user, its inline policy (``s3:*``, plus ``iam:*`` so that :meth:`S3Server.restricted_key`
  can issue keys that may do less) and its access key; every later request is signed with real
  keys and checked (a wrong key id is ``InvalidAccessKeyId``, a wrong secret
  ``SignatureDoesNotMatch``, an action the key's policy does not allow ``AccessDenied``).
  ``start()`` proves that before returning.
* Any failure raises :class:`~servers.ServerStartError` with the log tail: tests fail, never
  skip. ``stop()`` kills the process; idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from servers import ServerStartError, free_port

__all__ = ["S3Server"]

REGION = "us-east-1"
_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:*"], "Resource": "*"}],
}


class S3Server:
    """A private moto S3 server whose requests must carry the keys it issued."""

    def __init__(self, base_dir: Path, host: str = "127.0.0.1") -> None:
        self.base_dir = base_dir
        self.host = host
        self.port = 0
        self.log = base_dir / "moto.log"
        self.access_key_id = ""
        self.secret_access_key = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The URL clients talk to."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60) -> None:
        """Start the server, issue the access key and check that credentials are enforced."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        with self.log.open("ab") as out:
            try:
                self._proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.base_dir
                )
            except OSError as exc:
                raise ServerStartError("moto S3 server", f"cannot run {argv}: {exc}") from exc
        try:
            self._wait_until_answering(timeout)
            self._issue_key()
            self._check_credentials_are_enforced()
        except BaseException:
            self.stop()
            raise

    def _fail(self, reason: str) -> ServerStartError:
        return ServerStartError("moto S3 server", reason, self.log)

    def _wait_until_answering(self, timeout: float) -> None:
        # The dashboard API answers without spending one of the unauthenticated actions.
        url = f"{self.endpoint_url}/moto-api/data.json"
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise self._fail(f"the process exited with status {self._proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"no answer on {url} within {timeout:g}s")
            time.sleep(0.1)

    def _issue_key(self) -> None:
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",  # not checked: one of the 3 free actions
        )
        user = f"callstream-{uuid.uuid4().hex[:8]}"
        try:
            iam.create_user(UserName=user)
            iam.put_user_policy(
                UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(_POLICY)
            )
            key = iam.create_access_key(UserName=user)["AccessKey"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"creating the IAM user and access key: {exc}") from exc
        self.access_key_id = key["AccessKeyId"]
        self.secret_access_key = key["SecretAccessKey"]

    def _check_credentials_are_enforced(self) -> None:
        try:
            self.client().list_buckets()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(f"the issued access key does not work: {exc}") from exc
        wrong = self.client(aws_secret_access_key=self.secret_access_key[::-1])
        try:
            wrong.list_buckets()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "SignatureDoesNotMatch":
                return
            raise self._fail(f"a wrong secret gave {exc} instead of SignatureDoesNotMatch") from exc
        raise self._fail("a wrong secret was accepted: credentials are not checked")

    def restricted_key(self, actions: list[str]) -> tuple[str, str]:
        """Issue another access key whose policy allows only ``actions``; return (id, secret)."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )
        user = f"restricted-{uuid.uuid4().hex[:8]}"
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="some", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client with the issued key (``overrides`` replace client arguments)."""
        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": REGION,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "config": Config(
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=64,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
            **overrides,
        }
        return boto3.client("s3", **kwargs)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh name if none is given); return its name."""
        bucket = name or f"cs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def delete_bucket(self, bucket: str) -> None:
        """Delete a bucket with everything in it (and any unfinished multipart upload)."""
        client = self.client()
        with contextlib.suppress(botocore.exceptions.ClientError):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
                for i in range(0, len(keys), 1000):
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
            for up in uploads:
                client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            client.delete_bucket(Bucket=bucket)

    def stop(self) -> None:
        """Kill the server; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
