# expect: CV003,CV009
FROM localhost:5000/team/tools
# expect: CV003
FROM localhost:5000/team/tools:1.2 AS Tools
# expect: CV003
FROM registry.example.com:443/base/python:3.12
COPY --from=tools /x /x
