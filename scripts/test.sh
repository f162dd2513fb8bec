#!/usr/bin/env bash
# The one command that checks everything: installs what the tests need on Debian 12,
# then runs formatting, lints and every test (including the long end-to-end ones).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# Tests that shell out to kubectl must not quietly skip in CI.
export SPEGEL_REQUIRE_KUBECTL=1

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries the end-to-end tests start)"
cargo build --workspace --bins
echo "== cargo test (all, including ignored long end-to-end tests)"
cargo test --workspace -- --include-ignored
