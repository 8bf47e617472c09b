# localsched: one image for both daemons, the activator (DaemonSet) and endpointsctl (Deployment); the manifests pick
# the daemon with `command: [activator]` or `command: [endpointsctl]`. What is inside and how to build, verify and
# refresh it: docs/image.md. Needs BuildKit (the default builder since Docker 23) for `RUN --mount`.
#
# The base, pinned by digest (python:3.11-slim-bookworm, CPython 3.11.16; the multi-platform index, so one pin serves
# amd64 and arm64), used by both stages. Refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# (or let Renovate's/Dependabot's docker manager update this line), then rebuild and run the checks in docs/image.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# Build stage: every wheel the image installs, and nothing else.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# The dependencies first, exactly the pinned closure, as binary wheels (the image has no compiler); this layer is
# rebuilt only when constraints.txt changes.
COPY constraints.txt ./
RUN pip wheel --no-cache-dir --only-binary=:all: --no-deps --requirement constraints.txt --wheel-dir /wheels

# Then localsched itself, from only the daemons' packages: the build context never reaches devcluster/, loadtest/ or
# tests/ (not copied here; .dockerignore keeps them out of the context as well), so the wheel has only activator,
# endpointsctl and localsched. Resolving against /wheels alone (--no-index) fails the build if pyproject.toml has a
# dependency constraints.txt does not pin. --no-build-isolation: the base's setuptools (pinned with it by the digest)
# builds the wheel, rather than whatever setuptools PyPI has that day.
COPY pyproject.toml README.md ./
COPY localsched localsched
COPY activator activator
COPY endpointsctl endpointsctl
RUN pip wheel --no-cache-dir --no-build-isolation --no-index --find-links=/wheels \
        --constraint constraints.txt --wheel-dir /wheels . \
    && cp constraints.txt /wheels/

# Final stage: the base plus the wheels; no compiler, no cache, no source tree.
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="localsched" \
      org.opencontainers.image.description="Knative activator-side local scheduling: the activator (DaemonSet) and endpointsctl (ActivationEndpoints controller)" \
      org.opencontainers.image.source="https://github.com/localsched/localsched" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The user the manifests run as (runAsUser/runAsGroup 65532), with a passwd entry so that tools asking for the user's
# name or home get one. --no-log-init: no lastlog/faillog entries (they bloat the layer).
RUN groupadd --gid 65532 localsched \
    && useradd --uid 65532 --gid 65532 --no-log-init --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin localsched

# Install from the build stage's wheels only (bind-mounted: they never become a layer), then
#  - drop the console scripts pyproject.toml declares for modules this image does not carry (devcluster and the
#    localsched-* stand-ins: [project.scripts] is shared with the development install), so no command in PATH is
#    broken;
#  - prove the result: devcluster and loadtest are not importable, the dependencies are consistent, and both daemons
#    start far enough to print their version.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels --constraint=/wheels/constraints.txt localsched \
    && python -c "import importlib.metadata as m, importlib.util as u, os; [os.remove(f'/usr/local/bin/{e.name}') for e in m.distribution('localsched').entry_points if e.group == 'console_scripts' and u.find_spec(e.module.partition('.')[0]) is None]" \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('devcluster', 'loadtest', 'tests')))" \
    && pip check \
    && activator --version \
    && endpointsctl --version

USER 65532:65532
# 8012: the activator's proxy (`http`); 9090: /metrics, /healthz, /readyz and endpointsctl's /stats (`metrics`);
# 9091: endpointsctl's KEDA external scaler, gRPC (`keda`).
EXPOSE 8012 9090 9091
# No ENTRYPOINT: the command is the daemon (`docker run IMAGE endpointsctl --version`; the manifests' `command:`).
# Alone, the image explains itself.
CMD ["activator", "--help"]
