#!/usr/bin/env bash
# The test command: every Rust test, then the `rainier` Python package built into a virtual
# environment (maturin, numpy, ml_dtypes, pytest and pandas from the package registry) and its
# tests.
# Works on a fresh machine; RAINIER_VENV picks the environment's folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test"
cargo test --workspace --locked

venv="${RAINIER_VENV:-.venv}"
echo "== python environment ($venv)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check maturin numpy ml_dtypes pytest pandas
echo "== build the rainier package (maturin develop --release)"
VIRTUAL_ENV="$(cd "$venv" && pwd)" "$venv/bin/maturin" develop --release --locked -q
echo "== pytest"
# rainier.plan's tests compare its output with the binary `cargo test` just built.
export RAINIER_BIN="$PWD/target/debug/rainier"
"$venv/bin/python" -m pytest python/tests -q "$@"
