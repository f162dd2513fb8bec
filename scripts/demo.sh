#!/usr/bin/env bash
# The demo: an upstream registry and three nodes on this machine (network namespaces, each
# with containerd and spegel-node). Node 1 pulls from the upstream, nodes 2 and 3 peer to
# peer; it prints where each node's bytes came from. Needs root (namespaces, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --quiet -p spegel-node -p spegel-testbed --bin spegel-node --bin spegel-demo
exec target/debug/spegel-demo
