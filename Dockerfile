# syntax=docker/dockerfile:1
# One image for every process of Jobs Service; the command picks which:
#   docker run jobs-service migrate | api --host 0.0.0.0 | worker | scheduler
# The default command serves the API, which refuses to bind a non-loopback address
# without [[api_keys]], and to start without JOBS_REDIS_URL: mount a config file
# (JOBS_CONFIG_FILE) and set the URLs, or the container exits saying so. compose.dev.yml runs all of it; `make check-containers` lints this file.

# uv itself, pinned: the same resolver that wrote uv.lock installs it.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11-slim-trixie AS builder
COPY --from=uv /uv /usr/local/bin/uv
# Compiled bytecode: processes start without compiling every module (and could not write
# the .pyc files as the unprivileged user anyway). Copy mode: the cache is a separate mount.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /build
# The dependencies alone first: this layer changes only with the lock, not with every
# source edit.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
# Not editable: the runtime stage needs the virtual environment only, not the source.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-trixie AS runtime
# A fixed uid/gid, so volumes and Kubernetes securityContext can name it.
RUN groupadd --system --gid 10001 jobs \
    && useradd --system --uid 10001 --gid jobs --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin jobs
WORKDIR /app
# Code and dependencies stay owned by root (the service cannot change them); only var/,
# where the embedded SQLite default (sqlite+aiosqlite:///./var/jobs.db) lives, is the
# service's to write.
COPY --from=builder --chown=root:root /app/.venv /app/.venv
RUN install --directory --owner=jobs --group=jobs --mode=0750 /app/var
# PYTHONTZPATH empty: zone rules come from the tzdata package locked with the service,
# not the base image's database, so every replica computes the same fire times.
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONTZPATH=""
# Numeric: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 10001:10001
EXPOSE 8000 9464 9465
# Liveness of the default command (the API on its default port). Without curl: the
# image's own Python. Compose and orchestrators override it for the other processes,
# which answer on their metrics ports: worker.metrics_port, scheduler.metrics_port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["jobsctl"]
CMD ["api", "--host", "0.0.0.0"]
