FROM python:3.12-slim@sha256:abababababababababababababababababababababababababababababababab AS base
# expect: CV003
RUN --mount=type=bind,from=ghcr.io/astral-sh/uv:0.4.20,source=/uv,target=/bin/uv \
    --mount=type=cache,target=/root/.cache \
    uv pip install --system -r requirements.txt
RUN --mount=type=bind,from=base,source=/,target=/base true
# expect: CV003,CV009
RUN --mount=from=alpine,target=/alpine ls /alpine
