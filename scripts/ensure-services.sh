#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer for the test suite:
# start them where installed, install them with apt-get when run as root, else say what to install.
set -u
PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null || python3 - <<PY 2>/dev/null
import socket; socket.create_connection(("$PG_HOST", $PG_PORT), 1).close()
PY
}
redis_up() { python3 - <<PY 2>/dev/null
import socket
s = socket.create_connection(("127.0.0.1", $REDIS_PORT), 1); s.sendall(b"PING\r\n")
assert s.recv(16).startswith(b"+PONG")
PY
}
wait_for() { for _ in $(seq 1 30); do "$1" && return 0; sleep 0.5; done; return 1; }
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $* with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql || { echo "PostgreSQL is missing: install it (apt-get install postgresql) and run it on 127.0.0.1:5432 with a superuser 'root'" >&2; exit 1; }
    fresh_pg=1
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start 2>/dev/null ||
    pg_ctlcluster "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  wait_for pg_up || { echo "PostgreSQL did not start on $PG_HOST:$PG_PORT" >&2; exit 1; }
  if [ "${fresh_pg:-0}" = 1 ]; then
    # A fresh Debian cluster has no 'root' role and asks for passwords on TCP: the suite
    # connects as root:root (a trust-auth machine ignores the password).
    su postgres -c "psql -q -c \"CREATE ROLE root SUPERUSER LOGIN PASSWORD 'root'\"" 2>/dev/null || true
  fi
fi

if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server || { echo "Redis is missing: install it (apt-get install redis-server) and run it on 127.0.0.1:6379" >&2; exit 1; }
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  wait_for redis_up || { echo "Redis did not start on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
fi
echo "services: PostgreSQL and Redis answer" >&2
