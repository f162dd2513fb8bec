#!/usr/bin/env bash
# Installs the Debian 12 packages that the tests, the demo and the benchmarks use, and
# fetches the other containerd releases the test matrix runs (see fetch_containerd below).
# Idempotent: installs only what is missing (a command already on PATH counts as present,
# e.g. a kubectl from another package). Needs root (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

# command  package            why
needs=(
  "containerd      containerd         a real containerd per test node"
  "docker-registry docker-registry    the upstream registry (distribution 2.8)"
  "skopeo          skopeo             pushes test images; a real client of spegel-node"
  "protoc          protobuf-compiler  containerd-client compiles containerd's protos"
  "ip              iproute2           network namespaces and veths for multi-node tests"
  "tc              iproute2           link shaping (tbf) in tests and benchmarks"
  "iptables        iptables           drops a node's traffic in tests/cold_pull.rs"
  "nginx           nginx-light        the reference server in the registry benchmark"
  "systemd-analyze systemd            verifies systemd/spegel.service"
  "kubectl         kubernetes-client  renders deploy/ with kubectl kustomize"
  "chromium        chromium           loads the debug page headless in tests/debug_page.rs"
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

# containerd builds the test matrix runs besides Debian 12's 1.6 (scripts/test.sh):
# version  suite   Debian package version   sha256 of the .deb
containerd_builds=(
  "1.7.24  trixie  1.7.24~ds1-6+deb13u1  ed708deb96fe476a3bce4efa5c0538dfbcf717ab9a7c7944ba7260342c25899c"
  "2.1.9   sid     2.1.9+ds1-5           2dda86ce7033fd612fc50e136679d8174ccad680eb29cd4611e0d2a1b84cf591"
)
# Where they go: <cache>/<version>/bin/{containerd,ctr,containerd-shim-runc-v2}, which is
# what SPEGEL_TEST_CONTAINERD names. Gitignored.
containerd_cache="${SPEGEL_CONTAINERD_CACHE:-$PWD/.cache/containerd}"

# Fetches one containerd package from a newer Debian suite without touching the system's
# apt setup: a private sources list and lists directory, the mirror the system already
# uses, `apt-get download` (apt checks the .deb against the suite's signed index), the
# pinned sha256 checked again, `dpkg-deb -x` into the cache. A cached build is kept when
# its binaries still match the checksums recorded when it was unpacked.
fetch_containerd() {
  local version=$1 suite=$2 package_version=$3 sha256=$4
  local dest="$containerd_cache/$version"
  if [[ -f "$dest/SHA256SUMS" ]] && (cd "$dest" && sha256sum --quiet --check SHA256SUMS); then
    return
  fi
  local mirror work
  mirror=$(debian_mirror)
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'" RETURN
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$work/sources.list"
  local apt_options=(
    -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
    -o Acquire::Languages=none -o APT::Sandbox::User=root
  )
  echo "fetching containerd $package_version from $mirror $suite"
  apt-get "${apt_options[@]}" update -qq
  if ! (cd "$work" && apt-get "${apt_options[@]}" download -qq "containerd=$package_version"); then
    echo "install-deps.sh: containerd $package_version is gone from $suite (a newer upload replaced it):" >&2
    echo "  pin the version apt-cache policy shows and its sha256 in containerd_builds" >&2
    return 1
  fi
  local deb=("$work"/containerd_*.deb)
  echo "$sha256  ${deb[0]}" | sha256sum --quiet --check
  dpkg-deb -x "${deb[0]}" "$work/root"
  rm -rf "$dest"
  mkdir -p "$dest"
  mv "$work/root/usr/bin" "$dest/bin"
  (cd "$dest" && sha256sum bin/* >SHA256SUMS)
  "$dest/bin/containerd" --version
}

# The Debian mirror the system's own sources use for its release (deb.debian.org if none).
debian_mirror() {
  local codename mirror
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  mirror=$(apt-get indextargets --no-release-info --format '$(RELEASE) $(REPO_URI)' \
    'Identifier: Packages' | awk -v c="$codename" '$1 == c { print $2; exit }')
  echo "${mirror:-http://deb.debian.org/debian/}"
}

for line in "${containerd_builds[@]}"; do
  # shellcheck disable=SC2086 # split the table row into its fields
  fetch_containerd $line
done
