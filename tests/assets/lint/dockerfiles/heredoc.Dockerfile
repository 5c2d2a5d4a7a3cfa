# syntax=docker/dockerfile:1
# expect: CV003
FROM alpine:3.19 AS tools
RUN <<EOF
FROM heredoc-body:latest
echo "not an instruction"
EOF
# expect: CV003,CV009
FROM alpine AS final
