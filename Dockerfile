# localsched: one image for the activator and endpointsctl (the command picks the daemon).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY activator activator
COPY endpointsctl endpointsctl
COPY localsched localsched
COPY devcluster devcluster
COPY loadtest loadtest
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --no-create-home localsched
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532
EXPOSE 8012 9090
# The DaemonSet and Deployment set the command: [activator] or [endpointsctl].
ENTRYPOINT []
CMD ["activator", "--help"]
