#!/usr/bin/env bash
# A short bounded run of every fuzz target from its checked-in corpus.
#
# Default (CI): a fixed seed and a fixed number of executions per target (about 10 s each on a
# 2-core machine), so a run's length never depends on the machine's speed. The path it takes
# can still differ between machines (coverage depends on hash-map iteration order, random per
# process), so a fixed-seed run may find on CI what it did not find here: explore first with
# FUZZ_SECONDS before relying on it. FUZZ_SECONDS=N instead explores for N
# seconds per target from a random seed, to find new inputs.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets it pass its flags
# on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
runs_of() {
    case "$1" in
        asm) echo 300000 ;;
        catalog) echo 40000 ;;
        config_json) echo 1000000 ;;
        func_vs_timed) echo 200 ;;
        nki_trace) echo 400000 ;;
        npy) echo 3000000 ;;
        *) echo 100000 ;;
    esac
}
cargo fuzz build -s none
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
    if [ -n "${FUZZ_SECONDS:-}" ]; then
        budget=(-max_total_time="$FUZZ_SECONDS")
    else
        budget=(-seed=1 -runs="$(runs_of "$target")")
    fi
    echo "== fuzz $target (${budget[*]})"
    # A scratch copy of the corpus: new inputs found in CI are not written into the checkout.
    rm -rf "$work/corpus" && mkdir -p "$work/corpus"
    cp -r "corpus/$target/." "$work/corpus/"
    # Real inputs kept elsewhere in the repository are seeds too.
    case "$target" in
        asm) cp ../examples/asm/*.asm "$work/corpus/" ;;
        config_json)
            for f in ../crates/rainier-model/presets/*.json ../crates/rainier-cli/data/models/*.json; do
                cp "$f" "$work/corpus/$(basename "$(dirname "$f")")-$(basename "$f")"
            done
            ;;
    esac
    status=0
    cargo fuzz run -s none "$target" "$work/corpus" -- "${budget[@]}" > "$work/log" 2>&1 || status=$?
    grep -E "^(Done|INFO: seed corpus)|panicked|SUMMARY|ERROR" "$work/log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$work/log" >&2
        echo "fuzz $target failed (exit $status); a failing input is kept in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
