#!/usr/bin/env bash
# Installs the Debian 12 packages that the tests, the demo and the benchmarks use.
# Idempotent: installs only what is missing. Needs root (apt-get).
set -euo pipefail

packages=(
  containerd        # a real containerd per test node
  docker-registry   # the upstream registry (distribution 2.8)
  skopeo            # pushes test images, and is a real client of spegel-node
  protobuf-compiler # containerd-client compiles containerd's protos at build time
  iproute2          # network namespaces, veth, tc for the multi-node tests
  nginx-light       # the reference server in the registry benchmark
  systemd           # systemd-analyze verify of systemd/spegel.service
  kubernetes-client # kubectl kustomize of deploy/
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts services from packages it installs; the tests start their own instances.
for service in containerd docker-registry nginx; do
  systemctl stop "$service" >/dev/null 2>&1 || true
done
