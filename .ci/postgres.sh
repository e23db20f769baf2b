#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the search tests: `source .ci/postgres.sh` exports
# EDGECNN_TEST_POSTGRES_URL (and EDGECNN_REQUIRE_POSTGRES=1, so those tests fail instead of skipping) and
# defines pg_cleanup, which stops the server and removes its directory. The server refuses to run as root, so as
# root it runs as the `postgres` user. Without the binaries it says so and exports nothing.
pg_cleanup() { :; }
if ! command -v initdb >/dev/null 2>&1 || ! command -v pg_ctl >/dev/null 2>&1; then
  echo "CI: no PostgreSQL binaries (initdb, pg_ctl): the PostgreSQL search tests will be skipped" >&2
  return 0 2>/dev/null || exit 0
fi
pg_dir=$(mktemp -d)
pg_port=${EDGECNN_PG_PORT:-55432}
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pg_dir"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" initdb -D "$pg_dir/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" pg_ctl -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null
pg_cleanup() {
  "${as_pg[@]}" pg_ctl -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
export EDGECNN_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
export EDGECNN_REQUIRE_POSTGRES=1
echo "CI: PostgreSQL on 127.0.0.1:$pg_port (throw-away, stopped on exit)"
