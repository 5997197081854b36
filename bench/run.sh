#!/usr/bin/env bash
# Runs the benchmarks: builds release binaries, installs the packages the baselines,
# grasp-proxy and the `nodes` scenario need (nginx, fcgiwrap, cmake, postgresql) when missing,
# prepares data (cached in ~/.cache/grasp-bench) and runs every scenario against its baseline
# in the same run. The `nodes` scenario starts (and stops) its own throw-away PostgreSQL.
# Arguments go to grasp-bench, e.g.
#   bench/run.sh                  # everything but soak
#   bench/run.sh clone push       # some scenarios (clone storm push memory proxy relay
#                                 # purgatory placeholders hook nodes soak)
#   bench/run.sh --quick          # small sizes, a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grasp-target}"

missing=()
for pair in nginx:nginx fcgiwrap:fcgiwrap cmake:cmake; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
# The PostgreSQL server binaries are not on PATH (Debian keeps them per version).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked -p grasp-server -p grasp-hook -p grasp-proxy -p grasp-bench
exec "$CARGO_TARGET_DIR/release/grasp-bench" "$@"
