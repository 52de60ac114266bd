# syntax=docker/dockerfile:1
# One image for all four services; Kubernetes picks the service with
# `python -m services.<ingest|scheduler|delivery|export>` (see k8s/).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the project and its dependencies into a virtualenv -------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A C compiler for the ingest scanner (services/ingest/_scan.c); only this stage has one.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# .dockerignore admits only pyproject.toml, setup.py, README.md and services/.
COPY . .
# pip compiles .pyc files at install time, so the read-only runtime never needs to write any.
# The import check runs outside /src, so that it finds the installed package: without the
# scanner ingest would still work, but slowly, so a missing one fails the build instead.
RUN pip install . \
 && cd / && python -c "import services.ingest._scan"

# --- runtime: the virtualenv on a clean base, no compilers, no pip cache, no sources -----
FROM ${PYTHON_IMAGE} AS runtime
# GnuPG encrypts OpenPGP deliveries (services/delivery/openpgp.py).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gnupg \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 handoff \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin handoff
COPY --from=build /opt/venv /opt/venv
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes; /tmp is an emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 50051 50052 50053 50054 8080
CMD ["python", "-c", "print('Handoff image: run python -m services.<ingest|scheduler|delivery|export> or python -m services.common.migrate')"]
