# Spillway autoscaler daemon image: `scaler run` as a non-root user on a read-only root filesystem.
#
# Build:  docker build -t spillway-scaler:0.1.0 .
#         (without Docker: .ci/image builds this same file with buildah; see README "Install on a cluster")
# Run:    docker run --read-only --tmpfs /tmp -e SCALER_HTTP_LISTEN=0.0.0.0:8080 -p 8080:8080 \
#           spillway-scaler:0.1.0 --sandbox --speed 60 --duration 600
#
# Two stages: the first builds the project's wheel and installs it with every dependency pinned by
# constraints.txt into a virtual environment (without the [sim] extra: no matplotlib, no rich), then
# drops what the daemon never runs (pip, setuptools, the dependencies' own test suites); the second
# copies only that environment onto a clean base and compiles the daemon's numba kernels into it.
# No credentials are baked in: Kafka, AWS and the alert webhook token come from the environment or
# mounted files at run time (see helm/spillway).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# What the daemon never runs is dropped from the environment: the dependencies' test suites, the
# asyncio copy of the Kubernetes client (kubernetes.aio, 66 MB; scaler uses the synchronous one), and
# the API models of every AWS service but those scaler calls (lambda, sagemaker) and the ones
# botocore's credential chain calls (sts: IRSA web identity; sso, sso-oidc): 27 MB.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY scaler ./scaler
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/spillway \
    && /opt/spillway/bin/python -m pip install --constraint constraints.txt /wheels/spillway_scaler-*.whl \
    && /opt/spillway/bin/python -m pip check \
    && /opt/spillway/bin/python -m pip uninstall --quiet --yes pip setuptools \
    && site=/opt/spillway/lib/python3.11/site-packages \
    && find "$site" -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf "$site/kubernetes/aio" \
    && find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name lambda ! -name sagemaker \
       ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} + \
    && /opt/spillway/bin/python -m compileall -q /opt/spillway/lib

FROM ${PYTHON_IMAGE}
ARG SPILLWAY_UID=10001
LABEL org.opencontainers.image.title="spillway-scaler" \
      org.opencontainers.image.description="Forecast-driven autoscaler for LLM inference on Kubernetes and serverless GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid "${SPILLWAY_UID}" spillway \
    && useradd --system --uid "${SPILLWAY_UID}" --gid "${SPILLWAY_UID}" --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin spillway
COPY --from=build /opt/spillway /opt/spillway
COPY image/entrypoint.sh /opt/spillway/bin/spillway-entrypoint
COPY image/warm_kernels.py /opt/spillway/share/warm_kernels.py
# The root filesystem may be read-only: numba's compile cache goes to /tmp, which the chart mounts as
# a writable emptyDir (docker: --tmpfs /tmp); the entrypoint seeds it with the kernels compiled here.
# NUMBA_CPU_NAME=generic: code for any x86-64 CPU, so the cache built here is valid on every node
# (numba keys its cache by CPU model and would recompile on another).
ENV PATH=/opt/spillway/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    NUMBA_CPU_NAME=generic \
    HOME=/tmp
RUN NUMBA_CACHE_DIR=/opt/spillway/numba-cache /opt/spillway/bin/python /opt/spillway/share/warm_kernels.py
USER ${SPILLWAY_UID}:${SPILLWAY_UID}
WORKDIR /tmp
# /healthz, /readyz, /metrics (and /alerts). The daemon listens on 127.0.0.1:8080 unless told
# otherwise: set SCALER_HTTP_LISTEN=0.0.0.0:8080 to reach it from outside the container.
EXPOSE 8080
# spillway-entrypoint (image/entrypoint.sh) seeds /tmp with the compiled kernels, then execs `scaler run`
ENTRYPOINT ["spillway-entrypoint"]
