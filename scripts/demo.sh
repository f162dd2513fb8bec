#!/usr/bin/env bash
# The demo: an upstream registry and four nodes on this machine (network namespaces, each
# with containerd and spegel-node). Nodes 1-3 pull an image none of them has at the same
# moment, then node 4 pulls it; it prints where each node's bytes came from and what the
# upstream served. Needs root (namespaces, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --quiet -p spegel-node -p spegel-testbed --bin spegel-node --bin spegel-demo
exec cargo run --quiet -p spegel-testbed --bin spegel-demo
