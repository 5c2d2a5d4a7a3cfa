# syntax=docker/dockerfile:1
# expect: CV003
FROM golang:1.22 AS Build
RUN go build -o /app ./...

# expect: CV003,CV009
FROM alpine AS certs
RUN apk add --no-cache ca-certificates

FROM gcr.io/distroless/static:nonroot@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
COPY --from=build /app /app
COPY --from=CERTS /etc/ssl/certs /etc/ssl/certs
COPY --from=0 /go/bin /bin
# expect: CV003
COPY --from=nginx:1.25 /etc/nginx/nginx.conf /etc/nginx/
# expect: CV003,CV009
COPY --link --from=busybox:latest /bin/busybox /bin/
ENTRYPOINT ["/app"]
