"""A local S3-protocol server for tests and benchmarks: moto's server mode, in its own
process on 127.0.0.1, with a bucket, an IAM user whose keys sign every request, and the
standard environment variables that point a client at it.

    with LocalS3() as s3:          # starts the server, creates s3.bucket
        os.environ.update(s3.env)  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        ...                        # s3://bucket/... now works through obstore
    # stopped here (terminated, then killed if it lingers)

``auth=True`` (the default) turns on moto's request authentication once the user and the
bucket exist, so wrong keys are refused as S3 refuses them (403 InvalidAccessKeyId /
SignatureDoesNotMatch).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
REGION = "us-east-1"


class LocalS3:
    def __init__(self, bucket: str = "bucket", auth: bool = True, start_seconds: float = 30.0):
        self.bucket, self.auth, self.start_seconds = bucket, auth, start_seconds
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.env: dict[str, str] = {}

    def start(self) -> "LocalS3":
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_seconds
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode} (is moto[server] installed?)")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not answer on {self.endpoint} within {self.start_seconds} s")
                time.sleep(0.05)
        import boto3

        setup = dict(endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id="setup",
                     aws_secret_access_key="setup")
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="chirpid")
        key = iam.create_access_key(UserName="chirpid")["AccessKey"]
        iam.put_user_policy(UserName="chirpid", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        boto3.client("s3", **setup).create_bucket(Bucket=self.bucket)
        if self.auth:
            self._post("/moto-api/reset-auth", b"0")  # from now on every request must be signed by a known key
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        return self

    def client(self):
        """A boto3 S3 client with the user's keys (to damage or inspect objects in tests)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _post(self, path: str, data: bytes) -> None:
        request = urllib.request.Request(self.endpoint + path, data=data, method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
