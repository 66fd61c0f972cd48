#!/usr/bin/env bash
# A short bounded run of every fuzz target from its checked-in corpus (CI: 10 s each).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets it pass its flags
# on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-10}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
    echo "== fuzz $target (${seconds} s)"
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
    cargo fuzz run -s none "$target" "$work/corpus" -- -max_total_time="$seconds" \
        > "$work/log" 2>&1 || status=$?
    grep -E "^(Done|INFO: seed corpus)|panicked|SUMMARY|ERROR" "$work/log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$work/log" >&2
        echo "fuzz $target failed (exit $status); a failing input is kept in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
