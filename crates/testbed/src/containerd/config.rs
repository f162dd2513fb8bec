//! The `config.toml` for a throwaway containerd (1.6, 1.7 or 2.x) that shares the machine
//! with others.
//!
//! Everything a containerd would normally put in a system-wide place (sockets, root,
//! state, `/opt/containerd`, the CNI config dir it creates and watches) points into the
//! instance's own directory, and the CRI streaming server binds an ephemeral loopback
//! port, so any number of instances can run side by side.

use std::path::{Path, PathBuf};

/// Where one containerd instance keeps its files, all under one directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The directory holding everything below.
    pub(super) dir: PathBuf,
    /// `--root`: persistent data, including the content store.
    pub(super) root: PathBuf,
    /// `--state`: runtime state.
    pub(super) state: PathBuf,
    /// The gRPC socket (`--address`).
    pub(super) socket: PathBuf,
    /// The ttrpc socket.
    pub(super) ttrpc_socket: PathBuf,
    /// The CRI registry `config_path` (`certs.d`).
    pub(super) hosts_dir: PathBuf,
    /// The generated `config.toml`.
    pub(super) config: PathBuf,
    /// containerd's stdout and stderr.
    pub(super) log: PathBuf,
}

impl Layout {
    /// The layout for an instance living in `dir`. Socket names are kept short: unix
    /// socket paths must stay under about 100 bytes.
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("c.sock"),
            ttrpc_socket: dir.join("c.sock.ttrpc"),
            hosts_dir: dir.join("certs.d"),
            config: dir.join("config.toml"),
            log: dir.join("containerd.log"),
        }
    }
}

/// Where containerd unpacks images: the CRI `snapshotter` and `ctr`'s `--snapshotter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Snapshotter {
    /// Plain directories; each layer's snapshot starts as a full copy of its parent, so
    /// unpacking an image of L layers copies its bytes about L/2 times. Works on any
    /// filesystem, mounts nothing: the testbed's default.
    #[default]
    Native,
    /// What Kubernetes nodes run: a directory per layer, stacked by overlay mounts, no
    /// copies. Needs a filesystem that can hold overlay upper dirs (ext4, xfs; /tmp here).
    Overlayfs,
}

impl Snapshotter {
    /// The plugin's name in configs and on `ctr`'s command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Overlayfs => "overlayfs",
        }
    }
}

/// containerd 2.x's download slots (`max_concurrent_downloads`), as the operator guide
/// recommends for it; 1.6 and 1.7 keep their default (3).
const SLOTS_2X: u32 = 10;

/// Plugins that cannot work here (no such filesystems), would only add noise, or would
/// share a machine-wide socket between instances (NRI, on by default in 2.x). Names a
/// build does not have are ignored.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.nri.v1.nri",
];

/// Renders `config.toml` for `layout` in `version`: 2 (containerd 1.6 and 1.7; 2.x
/// migrates it) or 3 (containerd 2.x's own, with the CRI plugin split into
/// `io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`).
///
/// `transfer_unpack` (containerd 2.x) sets the transfer service's download slots and adds
/// `native` and `overlayfs` entries to its `unpack_config`:
/// CRI in 2.x pulls through the transfer service, which unpacks only for the
/// platform/snapshotter pairs listed there (overlayfs and erofs by default); without the
/// entry every pull fails with "no unpack platforms defined".
pub(super) fn render(
    layout: &Layout,
    version: u8,
    transfer_unpack: bool,
    snapshotter: Snapshotter,
) -> String {
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    let mut cri = if version >= 3 {
        cri_v3(layout, snapshotter)
    } else {
        cri_v2(layout, snapshotter)
    };
    if transfer_unpack {
        // containerd 2.x: download slots as the operator guide recommends (3, the default,
        // makes the cold-pull single flight fetch layers twice; see `spegel_hostconfig`'s
        // `download_slot_advice`).
        cri.push_str(&format!(
            "\n  [plugins.\"io.containerd.transfer.v1.local\"]\n    max_concurrent_downloads = {SLOTS_2X}\n"
        ));
        // overlayfs too: containerd 2.x does not carry a version 2 config's
        // `containerd.snapshotter` over and unpacks into its default, overlayfs.
        for snapshotter in ["native", "overlayfs"] {
            cri.push_str(&format!(
                r#"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = {platform}
    snapshotter = "{snapshotter}"
"#,
                platform = toml_string(&format!("linux/{}", oci_arch()))
            ));
        }
    }
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_string(p)).collect();
    format!(
        r#"version = {version}
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
{cri}"#,
        version = version.max(2),
        root = path(&layout.root),
        state = path(&layout.state),
        disabled = disabled.join(", "),
        socket = path(&layout.socket),
        ttrpc = path(&layout.ttrpc_socket),
        opt = path(&layout.dir.join("opt")),
    )
}

/// The CRI plugin in a version 2 config: one `io.containerd.grpc.v1.cri` section.
fn cri_v2(layout: &Layout, snapshotter: Snapshotter) -> String {
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    format!(
        r#"
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "{snapshotter}"
      discard_unpacked_layers = false

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = {hosts}
"#,
        cni_bin = path(&layout.dir.join("cni/bin")),
        cni_conf = path(&layout.dir.join("cni/net.d")),
        hosts = path(&layout.hosts_dir),
        snapshotter = snapshotter.name(),
    )
}

/// The CRI plugins in a version 3 config: images (snapshotter, layers, registry hosts),
/// runtime (CNI) and the server (streaming).
fn cri_v3(layout: &Layout, snapshotter: Snapshotter) -> String {
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    format!(
        r#"
  [plugins."io.containerd.cri.v1.images"]
    max_concurrent_downloads = {SLOTS_2X}
    snapshotter = "{snapshotter}"
    discard_unpacked_layers = false

    [plugins."io.containerd.cri.v1.images".registry]
      config_path = {hosts}

  [plugins."io.containerd.cri.v1.runtime"]
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = [{cni_bin}]
      conf_dir = {cni_conf}

  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"#,
        cni_bin = path(&layout.dir.join("cni/bin")),
        cni_conf = path(&layout.dir.join("cni/net.d")),
        hosts = path(&layout.hosts_dir),
        snapshotter = snapshotter.name(),
    )
}

/// This machine's architecture as OCI platforms name it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A TOML basic string holding `value`.
pub(super) fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `hosts.toml` that sends pulls for a registry to plain-HTTP `upstream_host`.
///
/// containerd ignores a `hosts.toml` holding only `server`, so the host is also listed
/// with its capabilities.
pub(super) fn plain_http_hosts_toml(upstream_host: &str) -> String {
    let url = toml_string(&format!("http://{upstream_host}"));
    format!("server = {url}\n\n[host.{url}]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_in_the_config_stays_inside_the_instance_dir() {
        let layout = Layout::new(Path::new("/tmp/ctd-abc"));
        for version in [2, 3] {
            let config = render(&layout, version, true, Snapshotter::Native);

            let paths: Vec<&str> = config
                .split('"')
                .filter(|piece| piece.starts_with('/'))
                .collect();

            assert!(paths.len() >= 8, "{config}");
            for path in paths {
                assert!(
                    path.starts_with("/tmp/ctd-abc/"),
                    "{path} escapes: {config}"
                );
            }
        }
    }

    #[test]
    fn the_config_uses_native_snapshotter_and_keeps_layers() {
        for version in [2, 3] {
            let config = render(
                &Layout::new(Path::new("/tmp/x")),
                version,
                false,
                Snapshotter::Native,
            );
            assert!(config.starts_with(&format!("version = {version}\n")));
            assert!(config.contains(r#"snapshotter = "native""#));
            assert!(config.contains("discard_unpacked_layers = false"));
            assert!(config.contains(r#"stream_server_port = "0""#));
            assert!(config.contains(r#"config_path = "/tmp/x/certs.d""#));
        }
    }

    #[test]
    fn overlayfs_is_named_in_both_config_versions() {
        for version in [2, 3] {
            let config = render(
                &Layout::new(Path::new("/tmp/x")),
                version,
                false,
                Snapshotter::Overlayfs,
            );
            assert!(config.contains(r#"snapshotter = "overlayfs""#), "{config}");
            assert!(!config.contains(r#"snapshotter = "native""#), "{config}");
        }
    }

    #[test]
    fn version_3_puts_image_settings_in_the_cri_images_plugin() {
        let config = render(
            &Layout::new(Path::new("/tmp/x")),
            3,
            true,
            Snapshotter::Native,
        );
        assert!(config.contains("unpack_config"));
        assert_eq!(config.matches("max_concurrent_downloads = 10").count(), 2);
        assert!(config.contains(r#"[plugins."io.containerd.cri.v1.images".registry]"#));
        assert!(!config.contains(r#"[plugins."io.containerd.grpc.v1.cri".registry]"#));
    }

    #[test]
    fn toml_string_escapes_quotes_backslashes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\n"), r#""a\"b\\c\u000A""#);
    }

    #[test]
    fn plain_http_hosts_toml_names_server_and_host_with_capabilities() {
        assert_eq!(
            plain_http_hosts_toml("127.0.0.1:5000"),
            "server = \"http://127.0.0.1:5000\"\n\n\
             [host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
    }
}
