# syntax=docker/dockerfile:1
# wva operator image. The same image runs the operator (`wva run`, the default) and the vLLM
# metrics emulator (`wva emulate ...`).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: compile wheels for wva and every dependency -------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# README.md* matches nothing if the file is absent; pyproject.toml keeps the COPY valid.
COPY pyproject.toml README.md* ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: no compilers, no source tree, non-root ----------------------------------------
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PATH=/opt/wva/bin:${PATH}
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/wva \
 && /opt/wva/bin/pip install --no-index --find-links=/wheels wva \
 && /opt/wva/bin/python -m compileall -q /opt/wva/lib \
 && groupadd --gid 65532 wva \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin wva
# OpenShift runs images with an arbitrary uid in group 0: everything stays world-readable and
# nothing is written outside /tmp (an emptyDir in the manifests).
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443 8081
ENTRYPOINT ["wva"]
CMD ["run"]
