#!/usr/bin/env bash
# A short bounded run of every fuzz target from its checked-in corpus (CI: 10 s each).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets it pass its flags
# on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-10}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for target in $(cargo fuzz list); do
    echo "== fuzz $target (${seconds} s)"
    # A scratch copy of the corpus: new inputs found in CI are not written into the checkout.
    work="$(mktemp -d)"
    cp -r "corpus/$target/." "$work/"
    # Real inputs kept elsewhere in the repository are seeds too.
    case "$target" in
        asm) cp ../examples/asm/*.asm "$work/" ;;
        config_json)
            for f in ../crates/rainier-model/presets/*.json ../crates/rainier-cli/data/models/*.json; do
                cp "$f" "$work/$(basename "$(dirname "$f")")-$(basename "$f")"
            done
            ;;
    esac
    cargo fuzz run -s none "$target" "$work" -- -max_total_time="$seconds" -print_final_stats=0 2>&1 \
        | grep -E "^(Done|INFO: seed corpus)|panicked|SUMMARY|ERROR" || true
    # libFuzzer exits non-zero on a crash; cargo fuzz forwards it, so check artifacts too.
    if compgen -G "artifacts/$target/*" > /dev/null; then
        echo "fuzz $target found a failing input: fuzz/artifacts/$target/" >&2
        exit 1
    fi
    rm -rf "$work"
done
