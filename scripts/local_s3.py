"""A local S3-compatible server (moto's) with the I/O log bucket created, for docker compose.

    pip install 'moto[server]' && python scripts/local_s3.py   # PORT=5000 BUCKET=vigil-logs

For development and demos only: moto keeps objects in memory (gone when it stops) and accepts
any credentials. Use MinIO, Ceph or S3 itself for anything that must last.
"""

from __future__ import annotations

import os
import time

import boto3  # installed with moto
from moto.server import ThreadedMotoServer


def main() -> None:
    host, port = os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "5000"))
    bucket = os.environ.get("BUCKET", "vigil-logs")
    server = ThreadedMotoServer(ip_address=host, port=port)
    server.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts anything
    )
    s3.create_bucket(Bucket=bucket)
    print(f"local S3 on {host}:{port}, bucket {bucket}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
