#!/bin/bash
# Docker HEALTHCHECK for every bourse role: GET /_healthcheck on the role's own port through
# bash's /dev/tcp, so the image needs no curl. Exit 0 on HTTP 200, 1 otherwise.
# The port comes from BOURSE_HTTP_ADDR, else from the role's default (see docs/operations.md, "Roles and ports").
set -u
addr="${BOURSE_HTTP_ADDR:-}"
if [ -n "$addr" ]; then
  port="${addr##*:}"
else
  cmdline="$(tr '\0' ' ' </proc/1/cmdline 2>/dev/null || true)"
  case " $cmdline " in
    *" quote-service "*) port=8001 ;;
    *" exchange "*) port=8002 ;;
    *" relay "*) port=8003 ;;
    *" streamer "*) port=8004 ;;
    *) port=8000 ;;
  esac
fi
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /_healthcheck HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 5 status <&3 || exit 1
exec 3<&-
case "$status" in
  HTTP/1.?" 200"*) exit 0 ;;
  *) echo "unhealthy: ${status}" >&2; exit 1 ;;
esac
