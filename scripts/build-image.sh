#!/usr/bin/env bash
# Builds the spegel image without Docker: the binaries (spegel-node, the entrypoint, and
# spegel-bootstrapper) plus the few shared libraries they link (glibc, libgcc_s) in one
# reproducible layer, as an OCI image layout. Runs as 65532 (nonroot) unless the pod says
# otherwise (spegel-node needs root for containerd's socket; see deploy/daemonset).
#
#   bash scripts/build-image.sh [--profile release|debug | --bin-dir DIR] [--out DIR]
#                               [--name NAME] [--user UID:GID]
#                               [--push docker://REF [--push-tls-verify false]]
#
# --profile  which cargo profile's binaries to pack (default release; built first)
# --bin-dir  pack the binaries already in DIR instead (no cargo build)
# --out      where the layout goes (default: <target>/image/spegel); replaced if it exists
# --name     the name `ctr images import` (and so `kind load image-archive`) gives it
#            (default localhost/spegel; the tag is the version)
# --user     the user it runs as unless the pod says otherwise (default 65532:65532)
# --push     copy the image there with skopeo (--push-tls-verify false for a plain-HTTP
#            registry)
# The last line printed is the layout's path; `oci:<path>:<version>` names the image.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
bin=""
out=""
name=localhost/spegel
user=65532:65532
push=""
push_tls_verify=true
while (($#)); do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --bin-dir) bin=$2; profile=prebuilt; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --push) push=$2; shift 2 ;;
    --push-tls-verify) push_tls_verify=$2; shift 2 ;;
    *) echo "build-image.sh: unknown argument $1 (see the header of this script)" >&2; exit 64 ;;
  esac
done
target="${CARGO_TARGET_DIR:-$PWD/target}"
case "$profile" in
  release) cargo build --release -p spegel-node -p spegel-bootstrapper >&2 ;;
  debug) cargo build -p spegel-node -p spegel-bootstrapper >&2 ;;
  prebuilt) ;;
  *) echo "build-image.sh: --profile is release or debug, not $profile" >&2; exit 64 ;;
esac
bin="${bin:-$target/$profile}"
out="${out:-$target/image/spegel}"
binaries=(spegel-node spegel-bootstrapper)
version=$("$bin/spegel-node" --version | awk '{ print $2 }')
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/bin" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
for binary in "${binaries[@]}"; do
  install -m 0755 "$bin/$binary" "$root/usr/bin/$binary"
  # The shared libraries and the dynamic loader, at the paths the binary looks for them.
  ldd "$bin/$binary" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"

# One layer, byte-for-byte reproducible: sorted, zero times and owners, gzip without a name.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n "$work/layer.tar"

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
# Moves a file into the layout's blobs and prints "<digest hex> <size>".
add_blob() {
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$out/blobs/sha256/$digest"
  echo "$digest $size"
}
read -r layer_digest layer_size < <(add_blob "$work/layer.tar.gz")

cat >"$work/config.json" <<EOF
{"architecture":"$arch","os":"linux","config":{"User":"$user","Entrypoint":["/usr/bin/spegel-node"],"Env":["PATH=/usr/bin"],"Labels":{"org.opencontainers.image.title":"spegel","org.opencontainers.image.version":"$version"}},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"scripts/build-image.sh --profile $profile"}]}
EOF
read -r config_digest config_size < <(add_blob "$work/config.json")

cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_digest","size":$layer_size}]}
EOF
read -r manifest_digest manifest_size < <(add_blob "$work/manifest.json")

cat >"$out/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"$version","io.containerd.image.name":"$name:$version"}}]}
EOF
printf '{"imageLayoutVersion":"1.0.0"}\n' >"$out/oci-layout"
echo "$name:$version ($profile, linux/$arch): manifest sha256:$manifest_digest" >&2

if [[ -n "$push" ]]; then
  skopeo copy --dest-tls-verify="$push_tls_verify" "oci:$out:$version" "$push" >&2
fi
echo "$out"
