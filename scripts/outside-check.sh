#!/usr/bin/env bash
# Outside check: test grasp-server with clients written by others. Builds grasp-server, starts
# it on 127.0.0.1 (free port, temporary data directory, default relative data paths), runs
# the GRASP conformance suite grasp-audit against it and prints the summary; with --ngit
# it also walks through ngit as a user would (init, push, clone over nostr://, send a PR,
# list PRs, plain git clone). Not part of scripts/test.sh: it needs the two tools, which it
# installs into $QA_TOOLS (default ~/.cache/qa-tools) when they are missing.
#
#   scripts/outside-check.sh [--ngit] [--no-build] [--spec SPEC] [--mode shared|isolated]
#
# Everything talks to 127.0.0.1 only: relay sync and hunting are off on the server, and
# ngit's default relays and grasp servers are pointed at it. Exit status: 0 when every
# check passed. See docs/how-to/outside-check.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${QA_TOOLS:-$HOME/.cache/qa-tools}
GRASP_AUDIT_VERSION=0.2.0
NGIT_VERSION=3.0.4
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/grasp-target}

WITH_NGIT=0
BUILD=1
SPEC=all
MODE=shared
while [ $# -gt 0 ]; do
    case $1 in
        --ngit) WITH_NGIT=1 ;;
        --no-build) BUILD=0 ;;
        --spec) SPEC=$2; shift ;;
        --mode) MODE=$2; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# --- tools -------------------------------------------------------------------------------

install_grasp_audit() {
    [ -x "$TOOLS/bin/grasp-audit" ] && return
    echo "== installing grasp-audit $GRASP_AUDIT_VERSION into $TOOLS"
    cargo install --locked --root "$TOOLS" grasp-audit --version "$GRASP_AUDIT_VERSION"
}

install_ngit() {
    [ -x "$TOOLS/bin/ngit" ] && [ -x "$TOOLS/bin/git-remote-nostr" ] && return
    echo "== installing ngit $NGIT_VERSION into $TOOLS (a release build takes ~15 minutes)"
    if cargo install --locked --root "$TOOLS" ngit --version "$NGIT_VERSION"; then
        return
    fi
    # ngit 3.0.4's lock file names versions this registry no longer resolves (nostr-sdk
    # 0.45.4 is yanked, webpki-roots 1.0.11 is missing): build the published source with
    # its lock file, moving only webpki-roots back to 1.0.10.
    local crate src
    crate=$(ls "$HOME"/.cargo/registry/cache/*/ngit-"$NGIT_VERSION".crate 2>/dev/null | head -n 1)
    [ -n "$crate" ] || { echo "ngit-$NGIT_VERSION.crate is not in the cargo cache" >&2; exit 1; }
    src="$TOOLS/ngit-src"
    rm -rf "$src" && mkdir -p "$src"
    tar -xzf "$crate" -C "$src" --strip-components=1
    (cd "$src" && cargo update --quiet -p webpki-roots@1.0.11 --precise 1.0.10)
    cargo install --locked --root "$TOOLS" --path "$src"
}

install_grasp_audit
[ "$WITH_NGIT" = 1 ] && install_ngit

# --- server ------------------------------------------------------------------------------

if [ "$BUILD" = 1 ]; then
    echo "== building grasp-server"
    (cd "$ROOT" && cargo build --quiet -p grasp-server --bin grasp-server)
fi
SERVER_BIN=$CARGO_TARGET_DIR/debug/grasp-server
[ -x "$SERVER_BIN" ] || { echo "$SERVER_BIN missing (drop --no-build)" >&2; exit 1; }

WORK=$(mktemp -d -t grasp-outside-XXXXXX)
SERVER_PID=
cleanup() {
    # The server runs in its own process group: stop it with every git child it started.
    if [ -n "$SERVER_PID" ]; then
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/server" "$WORK/home"
LOG=$WORK/server.log
# Default (relative) data paths, as an operator who just runs the binary has them.
(cd "$WORK/server" && exec setsid "$SERVER_BIN" --bind-address 127.0.0.1:0 --sync=false \
    --hunting=false >"$LOG" 2>&1) &
SERVER_PID=$!
ADDR=
for _ in $(seq 300); do
    ADDR=$(sed -n 's|^grasp-server listening on http://||p' "$LOG" | head -n 1)
    [ -n "$ADDR" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "grasp-server did not start; its log:" >&2; cat "$LOG" >&2; exit 1; }
echo "== grasp-server listening on http://$ADDR (data in $WORK/server/data)"

# Clients get a clean git environment: grasp-audit's fixed commit ids need its own author
# and dates, and nothing from the caller's git configuration.
CLEAN_ENV=(env -u GIT_AUTHOR_NAME -u GIT_AUTHOR_EMAIL -u GIT_AUTHOR_DATE -u GIT_COMMITTER_NAME
    -u GIT_COMMITTER_EMAIL -u GIT_COMMITTER_DATE -u GIT_DIR -u GIT_CONFIG_GLOBAL
    HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config" XDG_CACHE_HOME="$WORK/home/.cache"
    XDG_DATA_HOME="$WORK/home/.local/share" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
    PATH="$TOOLS/bin:$PATH")

# --- grasp-audit -------------------------------------------------------------------------

STATUS=0
echo "== grasp-audit $GRASP_AUDIT_VERSION audit --spec $SPEC --mode $MODE"
AUDIT_LOG=$WORK/audit.log
set +e
(cd "$WORK/home" && "${CLEAN_ENV[@]}" timeout 1200 grasp-audit audit \
    --relay "ws://$ADDR" --spec "$SPEC" --mode "$MODE") >"$AUDIT_LOG" 2>&1
AUDIT_RC=$?
set -e
PLAIN=$WORK/audit.txt
sed 's/\x1b\[[0-9;]*m//g' "$AUDIT_LOG" >"$PLAIN"
echo "-- failing checks (with the audit's reason):"
grep -A1 '✗' "$PLAIN" | grep -v '^--$' || echo "   none"
echo "-- skipped checks: $(grep -c '⏭' "$PLAIN" || true)"
grep -E 'Test results|Spec coverage' "$PLAIN" || true
if [ "$AUDIT_RC" != 0 ]; then
    STATUS=1
    echo "grasp-audit exited with $AUDIT_RC; last lines of its output:"
    tail -n 15 "$PLAIN"
fi

# --- ngit walkthrough --------------------------------------------------------------------

step() { # step NAME COMMAND... : runs COMMAND, prints PASS/FAIL with its output on failure
    local name=$1; shift
    local out
    if out=$("$@" 2>&1); then
        echo "   PASS  $name"
    else
        echo "   FAIL  $name"
        printf '%s\n' "$out" | grep -v '^ *[0-9]*: \|^ *at ' | tail -n 12 | sed 's/^/         /'
        STATUS=1
        return 1
    fi
}

random_key() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

ngit_walkthrough() {
    local relay="ws://$ADDR" dir="$WORK/ngit"
    mkdir -p "$dir"
    local -a NG=("${CLEAN_ENV[@]}"
        NGIT_RELAY_DEFAULT_SET="$relay" NGIT_RELAY_ANNOUNCEMENT_INDEXER_SET="$relay"
        NGIT_RELAY_BLASTER_SET="$relay" NGIT_RELAY_SIGNER_FALLBACK_SET="$relay"
        NGIT_GRASP_DEFAULT_SET="http://$ADDR"
        GIT_AUTHOR_NAME=Alice GIT_AUTHOR_EMAIL=alice@example.invalid
        GIT_COMMITTER_NAME=Alice GIT_COMMITTER_EMAIL=alice@example.invalid timeout 180)
    local alice bob
    alice=$(random_key)
    bob=$(random_key)
    echo "== ngit $NGIT_VERSION walkthrough"
    git init -q -b main "$dir/alice"
    echo hello >"$dir/alice/README"
    "${NG[@]}" git -C "$dir/alice" add README
    "${NG[@]}" git -C "$dir/alice" commit -qm init
    # ngit reads a grasp server without a scheme as https: name it with http://.
    step "ngit init (grasp server http://$ADDR only) publishes and pushes" \
        bash -c 'cd "$1" && shift && "$@"' _ "$dir/alice" "${NG[@]}" ngit --nsec "$alice" init \
        --name outside-check --identifier outside-check --description "outside check" \
        --grasp-server "http://$ADDR" -d || return
    "${NG[@]}" git -C "$dir/alice" config nostr.nsec "$alice"
    local url
    url=$(git -C "$dir/alice" remote get-url origin)
    echo "         clone URL: $url"
    echo more >>"$dir/alice/README"
    "${NG[@]}" git -C "$dir/alice" commit -qam second
    step "git push to the nostr:// remote (state event + git push)" \
        "${NG[@]}" git -C "$dir/alice" push origin main || return
    step "git clone $url" "${NG[@]}" git clone -q "$url" "$dir/bob" || return
    step "the nostr:// clone has the pushed commit" \
        test "$(git -C "$dir/bob" rev-parse HEAD)" = "$(git -C "$dir/alice" rev-parse HEAD)"
    "${NG[@]}" git -C "$dir/bob" config nostr.nsec "$bob"
    "${NG[@]}" git -C "$dir/bob" checkout -qb feature
    echo feature >"$dir/bob/feature.txt"
    "${NG[@]}" git -C "$dir/bob" add feature.txt
    "${NG[@]}" git -C "$dir/bob" commit -qm "add feature"
    step "ngit send (PR: refs/nostr/<id> push + kind 1618)" \
        bash -c 'cd "$1" && shift && "$@"' _ "$dir/bob" "${NG[@]}" ngit send HEAD~1 \
        --title "Outside check PR" --description "sent by scripts/outside-check.sh" -d
    local prs
    prs=$(cd "$dir/alice" && "${NG[@]}" ngit pr list 2>&1 || true)
    step "ngit pr list (as the owner) shows the PR" grep -q "add feature\|Outside check PR" <<<"$prs"
    local npub
    npub=$(sed -n 's|^nostr://\(npub1[a-z0-9]*\)/.*|\1|p' <<<"$url")
    local plain="http://$ADDR/$npub/outside-check.git"
    step "git clone $plain" "${NG[@]}" git clone -q "$plain" "$dir/plain" || return
    step "the plain clone has the pushed commit" \
        test "$(git -C "$dir/plain" rev-parse HEAD)" = "$(git -C "$dir/alice" rev-parse HEAD)"
    step "git ls-remote shows the PR tip under refs/nostr/" \
        bash -c 'git ls-remote "$1" "refs/nostr/*" | grep -q "$2"' _ "$plain" \
        "$(git -C "$dir/bob" rev-parse feature)"
}

if [ "$WITH_NGIT" = 1 ]; then
    ngit_walkthrough || true
fi

echo "-- server warnings and errors:"
grep -E ' (WARN|ERROR) ' "$LOG" | tail -n 20 || echo "   none"
if [ "$STATUS" = 0 ]; then echo "== outside check passed"; else echo "== outside check FAILED"; fi
exit "$STATUS"
