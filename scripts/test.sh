#!/usr/bin/env bash
# The one command that checks everything: installs what the tests need on Debian 12,
# then runs formatting, lints and every test (including the long end-to-end ones) against
# Debian 12's containerd 1.6, and the containerd matrix legs against 1.7 and 2.1.
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
echo "== cargo test, containerd 1.6 (Debian 12): all, including ignored long end-to-end tests"
cargo test --workspace -- --include-ignored

# The matrix legs: the tests where containerd's release matters, against each other
# release (version 2 config on 1.7, the native version 3 config on 2.1). The rest (unit
# tests, manifests, the systemd unit, HTTP bootstrap over mTLS, the testbed's own tests, the
# benchmark smoke run) runs once, on 1.6, above. README "Tests and CI" lists what runs where.
matrix_tests=(
  --test registry            # the registry over a real content store; CRI pulls through it
  --test p2p                 # multi-node peer-to-peer pulls, withdrawals, restarts
  --test p2p_loopback        # two nodes on loopback
  --test host_config         # configuration/cleanup/preflight with the binary
  --test containerd_versions # preflight keys per config version; content events
  --test systemd             # sd-notify readiness against containerd
  --test metrics             # registry metrics and the textfile
  --test image               # the image build-image.sh packs, run with ctr run
  --test daemonset           # the DaemonSet's pods on two nodes, mirroring between them
  --test cold_pull           # many nodes pulling one image at once (2.x: with 10 download slots)
)
for version in 1.7.24 2.1.9; do
  echo "== cargo test, containerd $version (matrix leg)"
  SPEGEL_TEST_CONTAINERD="$PWD/.cache/containerd/$version/bin" \
    cargo test -p spegel-e2e "${matrix_tests[@]}" -- --include-ignored
done
