#!/usr/bin/env bash
# Make sure wrk (the HTTP load generator of `make bench` and its smoke test) is on the PATH:
# install it with apt-get when run as root on Debian, else say in one line what to install.
set -u
command -v wrk >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing wrk with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null && exit 0
fi
echo "wrk is missing: install it (apt-get install wrk, or brew install wrk)" >&2
exit 1
