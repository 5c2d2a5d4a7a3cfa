# syntax=docker/dockerfile:1
ARG BASE=gcr.io/distroless/static:nonroot@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
FROM --platform=$BUILDPLATFORM golang:1.22-bookworm@sha256:1010101010101010101010101010101010101010101010101010101010101010 AS build
WORKDIR /src
COPY . .
RUN go build -o /app ./cmd/app

from alpine:3.19@sha256:2020202020202020202020202020202020202020202020202020202020202020 as certs
RUN apk add --no-cache ca-certificates

FROM ${BASE}
COPY --from=build /app /app
COPY --from=certs /etc/ssl/certs /etc/ssl/certs
FROM build AS test
FROM gcr.io/distroless/static:nonroot@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
ENTRYPOINT ["/app"]
