# syntax=docker/dockerfile:1
# One image for the whole suite: `managed-os serve <service>` runs one service,
# `managed-os migrate <service>` migrates its database (deploy/k8s runs both).
#
#   docker build -t managed-os .
#   docker run --rm -p 8081:8081 -e MOS_CATALOG_HOST=0.0.0.0 managed-os serve catalog

# ---- builder: install the distribution and its dependencies into a virtualenv -------------
FROM python:3.11.7-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed here
# either; the virtualenv is the only thing the final stage takes.
RUN python -m venv /opt/managed-os
WORKDIR /src
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY simulator ./simulator
RUN /opt/managed-os/bin/pip install . \
 && /opt/managed-os/bin/python -m compileall -q /opt/managed-os/lib

# ---- runtime: the same Python, the virtualenv, an unprivileged user ---------------------
FROM python:3.11.7-slim-bookworm

LABEL org.opencontainers.image.title="managed-os" \
      org.opencontainers.image.description="Keep a fleet of Macs on the macOS version an organisation requires, through Apple DDM." \
      org.opencontainers.image.licenses="MIT"

# Kubernetes mounts the root filesystem read-only: bytecode is compiled at build time and
# nothing is written at run time except under /tmp.
ENV PATH=/opt/managed-os/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 managed-os \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin managed-os

COPY --from=builder /opt/managed-os /opt/managed-os

WORKDIR /app
USER 10001:10001

EXPOSE 8081 8082 8083 8084

# Liveness without curl: find the service PID 1 serves (`serve <name>`; `run` starts catalog
# on 8081 first), take its port from MOS_<SERVICE>_PORT or the default, and GET /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; args = open('/proc/1/cmdline', 'rb').read().decode().split('\\0'); name = args[args.index('serve') + 1] if 'serve' in args else 'catalog'; ports = {'catalog': 8081, 'declarations': 8082, 'device-channel': 8083, 'compliance': 8084}; port = os.environ.get('MOS_' + name.upper().replace('-', '_') + '_PORT', ports[name]); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["managed-os"]
CMD ["serve", "catalog"]
