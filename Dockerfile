# syntax=docker/dockerfile:1
# Hephaestus Studio in a container: `docker build -t hephaestus-studio .`, then run it with
# deploy/docker-compose.yml beside Ollama and ComfyUI (docs/deploy.md).
#
# Two stages: the builder turns the studio's dependencies into wheels (it has the compilers a
# wheel-less dependency would need); the final image installs those wheels and nothing else,
# so no compiler or build tool ships in it. The studio runs from /app (its assets, presets and
# workflows beside app.py) as the unprivileged user `studio`; all its state lives in /data.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY studio ./studio
# Every dependency as a wheel. The studio's own wheel is left out of the final image: it runs
# from /app, where app.py finds assets/, presets/ and workflows/ beside the package.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && rm /wheels/hephaestus_studio-*.whl

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=8189 \
    STUDIO_DATA_DIR=/data
# The wheels are mounted for this step only, so they add no layer to the image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
    && printf '#!/bin/sh\nexec python -m studio.cli "$@"\n' > /usr/local/bin/studio \
    && chmod 0755 /usr/local/bin/studio \
    && groupadd --gid 1000 studio \
    && useradd --uid 1000 --gid studio --create-home --shell /usr/sbin/nologin studio \
    && mkdir -p /data /comfyui/models /backups \
    && chown studio:studio /data /comfyui/models /backups
WORKDIR /app
COPY app.py ./
COPY studio ./studio
COPY assets ./assets
COPY presets ./presets
COPY workflows ./workflows
# The studio's bytecode, compiled once here: with PYTHONDONTWRITEBYTECODE (and /app not the
# studio user's to write) Python would otherwise compile its ~150 modules from source at
# every start, ~0.4 s of CPU on 2 cores. Reading a .pyc needs no write.
RUN python -m compileall -q studio
USER studio
VOLUME ["/data"]
EXPOSE 8189
# Python rather than curl: the slim image has no curl. Any answer but 2xx (or none in 4 s)
# marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GRADIO_SERVER_PORT', '8189'), timeout=4)"]
CMD ["python", "app.py"]
