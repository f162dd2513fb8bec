//! The `SpegelNode` helper against a scripted stand-in for `spegel-node`: a few lines of
//! Python that check the command line, answer `/livez` and exit 0 on SIGTERM. The real
//! binary is exercised by the end-to-end tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use spegel_testbed::{Containerd, SpegelNode, require_root_tools};

const FAKE_NODE: &str = r#"#!/usr/bin/env python3
import http.server, signal, sys
args = sys.argv[1:]
assert args[0] == "registry", args
flags = dict(zip(args[1::2], args[2::2]))
for flag in ["--containerd-sock", "--containerd-content-path"]:
    assert flag in flags, (flag, args)
assert flags["--containerd-namespace"] == "k8s.io", args
assert flags.get("--extra") == "yes", args
host, port = flags["--registry-addr"].rsplit(":", 1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/livez" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("fake spegel-node listening", flush=True)
http.server.HTTPServer((host, int(port)), Handler).serve_forever()
"#;

fn write_fake_node(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("spegel-node");
    std::fs::write(&path, FAKE_NODE)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[tokio::test]
async fn a_node_is_started_with_the_expected_flags_and_answers_on_its_address() {
    require_root_tools().unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = write_fake_node(bin_dir.path()).unwrap();
    let containerd = Containerd::start().await.unwrap();

    let mut node = SpegelNode::start_binary(&binary, &containerd, &["--extra", "yes"])
        .await
        .unwrap();

    assert!(node.addr().ip().is_loopback());
    let livez = spegel_testbed::http::get(&format!("{}/livez", node.url()), &[])
        .await
        .unwrap();
    assert_eq!(livez.status, 200);
    assert!(node.log().unwrap().contains("fake spegel-node listening"));
    let status = node.terminate().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(
        node.terminate().await.is_err(),
        "terminating twice is an error"
    );
}

#[tokio::test]
async fn a_node_that_dies_at_startup_is_reported_with_its_log() {
    require_root_tools().unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = write_fake_node(bin_dir.path()).unwrap();
    let containerd = Containerd::start().await.unwrap();

    // Without `--extra yes` the script's assertion fails and it exits.
    let error = SpegelNode::start_binary(&binary, &containerd, &[])
        .await
        .err()
        .unwrap();

    let message = format!("{error:#}");
    assert!(message.contains("exited early"), "{message}");
    assert!(message.contains("AssertionError"), "{message}");
}
