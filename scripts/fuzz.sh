#!/usr/bin/env bash
# Runs the cargo-fuzz targets (libFuzzer, nightly Rust) for a while each.
#
#   scripts/fuzz.sh                     # every target, 300 s each
#   scripts/fuzz.sh --time 60 repo_url  # one target, 60 s
#
# Targets (fuzz/fuzz_targets/, bodies in fuzz/harness/): receive_pack_commands,
# relay_message, nip34_event, repo_url. Each run starts from the committed seeds
# (fuzz/seeds/<target>/) plus a working corpus kept in ~/.cache/grasp-fuzz/corpus/<target>/.
# A crash, a hang (-timeout) or runaway memory leaves its input in fuzz/artifacts/<target>/;
# fix the bug, then copy the input to fuzz/regressions/<target>/ so the normal (stable) test
# suite replays it (fuzz/harness/tests/corpora.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

time=300
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) time="$2"; shift 2 ;;
        --time=*) time="${1#--time=}"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    targets=(receive_pack_commands relay_message nip34_event repo_url)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

export CARGO_TARGET_DIR="${GRASP_FUZZ_TARGET_DIR:-$HOME/.cache/grasp-fuzz-target}"
cache="${GRASP_FUZZ_CACHE:-$HOME/.cache/grasp-fuzz}"
failed=()
for target in "${targets[@]}"; do
    corpus="$cache/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "== $target: ${time} s"
    # -s none: the code under test is safe Rust, so AddressSanitizer adds cost, not findings;
    # -a keeps debug assertions (overflow checks) on.
    if ! cargo +nightly fuzz run -s none -a "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$time" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/"; then
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes, hangs or memory blow-ups in: ${targets[*]}"
