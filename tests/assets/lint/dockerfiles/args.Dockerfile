# expect: CV003,CV009
ARG BASE=alpine:latest
ARG REGISTRY=docker.io
ARG PYTHON=3.12
ARG UNSET
FROM ${BASE} AS first
# expect: CV003
FROM ${REGISTRY}/library/python:${PYTHON}-slim AS second
# expect: CV003-info
FROM $UNSET AS third
# expect: CV003,CV009
FROM ${REGISTRY}/library/node AS fourth
ARG BASE
ARG STAGE_ONLY=ubuntu:latest
RUN echo "FROM not-an-image:latest"
FROM ${BASE} AS again
