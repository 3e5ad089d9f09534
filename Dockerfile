# syntax=docker/dockerfile:1
#
# Two images from one build, both non-root (uid/gid 10001) on python:3.11-slim:
#
#   docker build --target operator -t cadenza-operator:0.1.0 .   # `cadenza operator`, port 8080
#   docker build --target sidecar  -t cadenza-sidecar:0.1.0 .    # `cadenza-sidecar`, port 9090
#
# The builder turns the source into one wheel; each target installs that wheel into its own
# virtualenv (the operator with the `operator` extra, the sidecar with aiohttp only), and the
# final stages copy just the virtualenv, so no compiler, cache or source tree ships.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 cadenza \
 && useradd --system --uid 10001 --gid cadenza --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cadenza

# --- build the wheel -----------------------------------------------------------------------------
FROM base AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY executor_sidecar/ executor_sidecar/
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- one virtualenv per image --------------------------------------------------------------------
FROM builder AS operator-venv
RUN python -m venv /opt/cadenza \
 && /opt/cadenza/bin/pip install "$(ls /wheels/cadenza-*.whl)[operator]"

FROM builder AS sidecar-venv
RUN python -m venv /opt/cadenza \
 && /opt/cadenza/bin/pip install /wheels/cadenza-*.whl

# --- sidecar: runs beside the app container in each executor pod ---------------------------------
FROM base AS sidecar
COPY --from=sidecar-venv /opt/cadenza /opt/cadenza
# The spool keeps unsent results across restarts; mount a volume here in the pod.
RUN install -d -o 10001 -g 10001 -m 0750 /var/run/cadenza/spool
ENV PATH=/opt/cadenza/bin:$PATH
USER 10001:10001
EXPOSE 9090
# The pod's args choose the handler: --handler-url http://127.0.0.1:<port>/... or --command ...
ENTRYPOINT ["cadenza-sidecar"]

# --- operator (last, so a plain `docker build .` gives the operator) ------------------------------
FROM base AS operator
COPY --from=operator-venv /opt/cadenza /opt/cadenza
COPY sql/ /app/sql/
ENV PATH=/opt/cadenza/bin:$PATH \
    CADENZA_MIGRATIONS_DIR=/app/sql
WORKDIR /app
USER 10001:10001
# 8080: probes, REST API, callbacks, /metrics. 9443: the admission webhook (HTTPS).
EXPOSE 8080 9443
ENTRYPOINT ["cadenza", "operator"]
