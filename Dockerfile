# syntax=docker/dockerfile:1
# Vigil container image. Build:  docker build -t vigil:0.1.0 .
# tests/test_deploy_container.py checks this file's contract (ENV, ENTRYPOINT/CMD, HEALTHCHECK)
# by installing the same wheel with the same constraints into a fresh venv and running it.

# ---- stage 1: build the wheel (pure Python, so no compiler is needed even here) ----
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY model_store ./model_store
COPY monitoring ./monitoring
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- stage 2: runtime ----
FROM python:3.11-slim

# A fixed numeric uid lets Kubernetes' runAsNonRoot verify the user without /etc/passwd.
RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --no-create-home \
      --home-dir /var/lib/vigil --shell /usr/sbin/nologin vigil \
 && mkdir -p /var/lib/vigil/models /var/lib/vigil/data \
 && chown -R vigil:vigil /var/lib/vigil

# The wheel is bind-mounted from stage 1, so neither it nor pip's cache lands in a layer.
# Every runtime dependency is pinned by constraints.txt (regenerate it as its header says).
COPY constraints.txt /etc/vigil/constraints.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir -c /etc/vigil/constraints.txt /wheels/vigil-*.whl

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIGIL_HOST=0.0.0.0 \
    VIGIL_PORT=8000 \
    VIGIL_WORKERS=1 \
    VIGIL_MODEL_STORE=/var/lib/vigil/models \
    VIGIL_DATA_DIR=/var/lib/vigil/data

# models: the versioned store (mounted read-only in Kubernetes); data: spool, Parquet log, reports.
VOLUME ["/var/lib/vigil/models", "/var/lib/vigil/data"]
WORKDIR /var/lib/vigil
USER 10001:10001
EXPOSE 8000

# slim has no curl; urlopen raises (exit 1) on refusal, timeout or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VIGIL_PORT', '8000') + '/v2/health/live', timeout=4)"]

# uvicorn handles SIGTERM itself: it stops accepting, finishes in-flight requests, then the
# app's lifespan flushes the I/O log spool before the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vigil"]
CMD ["serve"]
