# escape=`
# expect: CV003
FROM --platform=linux/amd64 `
    mcr.microsoft.com/windows/servercore:ltsc2022 AS win
RUN <<EOF
FROM heredoc-body:latest
EOF
# expect: CV003,CV009
from localhost:5000/team/tools
# expect: CV003
FROM localhost:5000/team/tools:1.2
