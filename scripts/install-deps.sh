#!/usr/bin/env bash
# Installs the Debian 12 packages that the tests, the demo and the benchmarks use.
# Idempotent: installs only what is missing (a command already on PATH counts as present,
# e.g. a kubectl from another package). Needs root (apt-get).
set -euo pipefail

# command  package            why
needs=(
  "containerd      containerd         a real containerd per test node"
  "docker-registry docker-registry    the upstream registry (distribution 2.8)"
  "skopeo          skopeo             pushes test images; a real client of spegel-node"
  "protoc          protobuf-compiler  containerd-client compiles containerd's protos"
  "ip              iproute2           network namespaces and veths for multi-node tests"
  "tc              iproute2           link shaping (tbf) in tests and benchmarks"
  "nginx           nginx-light        the reference server in the registry benchmark"
  "systemd-analyze systemd            verifies systemd/spegel.service"
  "kubectl         kubernetes-client  renders deploy/ with kubectl kustomize"
)

missing=()
for line in "${needs[@]}"; do
  read -r command package _ <<<"$line"
  command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts services from packages it installs; the tests start their own instances.
for service in containerd docker-registry nginx; do
  systemctl stop "$service" >/dev/null 2>&1 || true
done
