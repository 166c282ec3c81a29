# syntax=docker/dockerfile:1
# Agent Bridge: an OpenAI-compatible proxy for Azure agents.

FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11-slim
LABEL org.opencontainers.image.title="agent-bridge" \
      org.opencontainers.image.description="OpenAI-compatible HTTP proxy for Azure agents"
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --home-dir /app --shell /usr/sbin/nologin bridge
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=bridge:bridge config.yaml /app/config.yaml
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    AGENT_BRIDGE_HOST=0.0.0.0 \
    AGENT_BRIDGE_PORT=8000 \
    AGENT_BRIDGE_WORKERS=1 \
    AGENT_BRIDGE_CONFIG=/app/config.yaml
USER bridge
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['AGENT_BRIDGE_PORT']}/healthz\", timeout=2)"]
# Host, port, workers and config come from the AGENT_BRIDGE_* variables above.
ENTRYPOINT ["agent-bridge", "serve"]
