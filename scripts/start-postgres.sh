#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks.
#
#   ./scripts/start-postgres.sh            # prints the URL on its last line
#   source scripts/start-postgres.sh       # also exports VEIL_TEST_DATABASE_URL
#   ./scripts/start-postgres.sh stop       # stop the cluster (its folder is kept)
#
# Installs Debian's `postgresql` if initdb is missing. The cluster lives in $VEIL_PG_DIR
# (default /tmp/veil-pg), listens only on 127.0.0.1:$VEIL_PG_PORT (default 54329), trusts
# local connections (it is a throwaway: never point it at real data) and gets a fresh empty
# database $VEIL_PG_DB (default veil) on every start. Idempotent: a running cluster is reused.
set -euo pipefail

PG_DIR="${VEIL_PG_DIR:-/tmp/veil-pg}"
PG_PORT="${VEIL_PG_PORT:-54329}"
PG_DB="${VEIL_PG_DB:-veil}"
PG_USER="veil"

_pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] && echo "$bin"
}

_start_postgres() {
  local bin sudo="" as_user=()
  if ! bin=$(_pg_bin); then
    echo "start-postgres: installing postgresql" >&2
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    bin=$(_pg_bin)
  fi
  # PostgreSQL refuses to run as root; run it as the `postgres` system user then.
  if [ "$(id -u)" -eq 0 ]; then
    as_user=(runuser -u postgres --)
  fi
  mkdir -p "$PG_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$PG_DIR"
  if [ ! -s "$PG_DIR/PG_VERSION" ]; then
    "${as_user[@]}" "$bin/initdb" -D "$PG_DIR" -U "$PG_USER" --auth=trust -E UTF8 \
      >"$PG_DIR.initdb.log" 2>&1 || { cat "$PG_DIR.initdb.log" >&2; return 1; }
  fi
  if ! "${as_user[@]}" "$bin/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    "${as_user[@]}" "$bin/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w start \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=300 -c fsync=off" \
      >/dev/null
  fi
  PGOPTIONS="--client-min-messages=warning" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -q -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
  VEIL_TEST_DATABASE_URL="postgresql+psycopg://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"
  export VEIL_TEST_DATABASE_URL
  echo "$VEIL_TEST_DATABASE_URL"
}

_stop_postgres() {
  local bin as_user=()
  bin=$(_pg_bin)
  [ "$(id -u)" -eq 0 ] && as_user=(runuser -u postgres --)
  "${as_user[@]}" "$bin/pg_ctl" -D "$PG_DIR" -m fast stop >/dev/null
}

if [ "${1:-start}" = "stop" ]; then
  _stop_postgres
else
  _start_postgres
fi
