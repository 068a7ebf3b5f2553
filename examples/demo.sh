#!/usr/bin/env bash
# make demo: start a throwaway PostgreSQL, install the pgmig engine with psql, apply an example
# batch with psql, show the status, apply it again (nothing to do), then stop and clean up.
# Needs the PostgreSQL server binaries (Debian: apt-get install postgresql) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."

pgbin="${PGMIG_PGBIN:-}"
if [[ -z "$pgbin" ]]; then
  if command -v initdb >/dev/null; then pgbin="$(dirname "$(readlink -f "$(command -v initdb)")")"
  else pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"; fi
fi
[[ -x "$pgbin/initdb" ]] || { echo "demo: no PostgreSQL server binaries found; apt-get install postgresql, or set PGMIG_PGBIN" >&2; exit 2; }
psql="$(command -v psql || echo "$pgbin/psql")"

dir="$(mktemp -d /tmp/pgmig-demo.XXXXXX)"
port=$(( 20000 + RANDOM % 20000 ))
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  # initdb refuses to run as root: run the server as the postgres account.
  chown postgres "$dir"; chmod 755 "$dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL on port $port"
"${as_pg[@]}" "$pgbin/initdb" --no-sync -A trust -U postgres -D "$dir/data" >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
run() { echo; echo "\$ $*"; "$@"; }

run "$psql" -X -q -v ON_ERROR_STOP=1 -f sql/build/pgmig.sql
run "$psql" -X -c "select pgmig.engine_version()"

batch="$(cat examples/demo-batch.json)"
# psql -c does not interpolate :'variables', so the statement goes on stdin.
echo
echo "\$ psql -v batch=\"\$(cat examples/demo-batch.json)\" <<< \"select * from migrate_apply(:'batch')\""
"$psql" -X -v ON_ERROR_STOP=1 -v batch="$batch" <<< "select * from migrate_apply(:'batch');"
echo
echo "== again: everything is already applied"
"$psql" -X -v ON_ERROR_STOP=1 -v batch="$batch" <<< "select * from migrate_apply(:'batch');"
run "$psql" -X -c "select version, name, state, applied_by, client, duration from migrate_status()"
run "$psql" -X -c "\\d accounts"
echo
echo "== demo done; the server is stopped and $dir removed"
