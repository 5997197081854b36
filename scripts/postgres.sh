# Sourced by scripts/test.sh: starts a throw-away PostgreSQL for the tests and stops it at
# exit. `start_test_postgres` initdb's a data directory under a fresh temporary directory,
# listens on 127.0.0.1 only (on a free port) and on a unix socket inside that directory,
# and exports GRASP_TEST_DATABASE_URL (superuser `grasp`, trusted on loopback: the tests
# create and drop one database each). `stop_test_postgres` stops it and removes the
# directory; test.sh runs it from an EXIT trap, so a failing run stops it too.
#
# initdb and postgres refuse to run as root: as root they run as the `postgres` system user
# (created by the Debian package), with the temporary directory handed to it.

test_pg_dir=""
test_pg_bin=""

# Runs a PostgreSQL program as the user that owns the data directory.
as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_test_postgres() {
    test_pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$test_pg_bin" ] || [ ! -x "$test_pg_bin/initdb" ]; then
        echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin" >&2
        return 1
    fi
    test_pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/grasp-test-pg.XXXXXX")"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$test_pg_dir"
    fi
    chmod 700 "$test_pg_dir"
    as_pg_user "$test_pg_bin/initdb" -D "$test_pg_dir/data" -U grasp --auth=trust -E UTF8 --no-sync \
        >"$test_pg_dir/initdb.log" 2>&1 || { cat "$test_pg_dir/initdb.log" >&2; return 1; }
    # Durability is not what the tests check: no fsync keeps the many small commits cheap.
    local options="-c listen_addresses=127.0.0.1 -k $test_pg_dir -c max_connections=1000"
    options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    local port attempt
    for attempt in $(seq 1 20); do
        port=$((20000 + RANDOM % 30000))
        if as_pg_user "$test_pg_bin/pg_ctl" -D "$test_pg_dir/data" -l "$test_pg_dir/server.log" -w -t 60 \
            -o "-p $port $options" start >/dev/null; then
            export GRASP_TEST_DATABASE_URL="postgres://grasp@127.0.0.1:$port/postgres"
            echo "PostgreSQL ($("$test_pg_bin/postgres" --version)) on 127.0.0.1:$port, data in $test_pg_dir"
            return 0
        fi
        echo "PostgreSQL did not start on port $port (attempt $attempt); trying another" >&2
        tail -n 5 "$test_pg_dir/server.log" >&2 || true
    done
    return 1
}

stop_test_postgres() {
    [ -n "$test_pg_dir" ] || return 0
    if [ -f "$test_pg_dir/data/postmaster.pid" ]; then
        as_pg_user "$test_pg_bin/pg_ctl" -D "$test_pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$test_pg_dir"
    test_pg_dir=""
}
