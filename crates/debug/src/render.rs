//! The sections of the debug pages, rendered from plain data (so they are tested without a
//! running node). Every value from outside goes through [`escape`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use spegel_registry::{Measurement, MirroredRequest, Outcome};
use spegel_routing::{Key, PeerSummary};

use crate::html::{ago, bytes, escape, millis, throughput, uptime, utc};

/// Rows shown at most in the peers and images tables.
pub const MAX_ROWS: usize = 200;

/// What the page says when the router and mirror have not started yet.
pub const NOT_STARTED: &str =
    "not started yet: the router and the mirror start after the metrics server; reload in a moment";

/// This node, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub peer_id: Option<String>,
    pub zone: Option<String>,
    pub version: String,
    pub uptime: Duration,
}

/// The "This node" section.
pub fn node(view: &NodeView) -> String {
    let peer_id = view.peer_id.as_deref().unwrap_or("(not started yet)");
    format!(
        "<h2>This node</h2>\n<table id=\"node\">\
<tr><th>peer ID</th><td><code>{}</code></td></tr>\
<tr><th>zone</th><td>{}</td></tr>\
<tr><th>version</th><td>{}</td></tr>\
<tr><th>uptime</th><td>{}</td></tr></table>\n",
        escape(peer_id),
        escape(view.zone.as_deref().unwrap_or("(none)")),
        escape(&view.version),
        uptime(view.uptime),
    )
}

/// A peer as the page shows it: what the router knows, and its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub peer: PeerSummary,
    /// The zone it named (`None`: unknown or none; the page says "(none)").
    pub zone: Option<String>,
}

/// The "Peers" section; `None` when the router is not there (yet).
pub fn peers(peers: Option<&[PeerRow]>, now: SystemTime) -> String {
    let mut out = String::from("<h2>Peers</h2>\n");
    let Some(peers) = peers else {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(NOT_STARTED));
        return out;
    };
    let connected = peers.iter().filter(|p| p.peer.connected).count();
    let _ = writeln!(
        out,
        "<p>{} known, {connected} connected now.</p>",
        peers.len()
    );
    if peers.is_empty() {
        return out;
    }
    out.push_str("<table id=\"peers\"><tr><th>peer ID</th><th>registry address</th><th>zone</th><th>connected</th><th>last seen</th></tr>\n");
    for PeerRow { peer, zone } in peers.iter().take(MAX_ROWS) {
        let registry = peer
            .registry
            .map_or_else(|| "(not identified yet)".to_owned(), |a| a.to_string());
        let seen = peer.last_seen.map_or_else(
            || "-".to_owned(),
            |t| format!("{} ({})", utc(t), ago(t, now)),
        );
        let _ = writeln!(
            out,
            "<tr class=\"peer\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&peer.id.to_string()),
            escape(&registry),
            escape(zone.as_deref().unwrap_or("(none)")),
            if peer.connected { "yes" } else { "no" },
            escape(&seen),
        );
    }
    out.push_str("</table>\n");
    more(&mut out, peers.len());
    out
}

/// The "Advertised" section: the image tags and how many digests; `None` when the router is
/// not there (yet).
pub fn advertised(keys: Option<&[Key]>) -> String {
    let mut out = String::from("<h2>Advertised</h2>\n");
    let Some(keys) = keys else {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(NOT_STARTED));
        return out;
    };
    let count = |f: fn(&Key) -> bool| keys.iter().filter(|k| f(k)).count();
    let mut images: Vec<&str> = keys
        .iter()
        .filter_map(|k| match k {
            Key::Tag(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    images.sort_unstable();
    let _ = writeln!(
        out,
        "<p id=\"advertised-counts\">{} image tags, {} digests, {} in-flight keys (downloads in progress or just finished).</p>",
        images.len(),
        count(|k| matches!(k, Key::Digest(_))),
        count(|k| matches!(k, Key::InFlight(_))),
    );
    if images.is_empty() {
        return out;
    }
    out.push_str("<table id=\"images\"><tr><th>image</th><th></th></tr>\n");
    for image in images.iter().take(MAX_ROWS) {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td><a href=\"/debug/measure?image={}\">measure</a></td></tr>",
            escape(image),
            escape(&form_encode(image)),
        );
    }
    out.push_str("</table>\n");
    more(&mut out, images.len());
    out
}

/// The "Last mirrored requests" section, newest first; `None` when the mirror is not there
/// (yet).
pub fn mirrored(requests: Option<&[MirroredRequest]>, now: SystemTime) -> String {
    let mut out = String::from("<h2>Last mirrored requests</h2>\n");
    let Some(requests) = requests else {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(NOT_STARTED));
        return out;
    };
    if requests.is_empty() {
        out.push_str(
            "<p>None yet: this node's containerd has not asked for anything it did not hold.</p>\n",
        );
        return out;
    }
    out.push_str("<table id=\"mirrored\"><tr><th>time</th><th>registry</th><th>what</th><th>peer</th><th>bytes</th><th>duration</th><th>outcome</th></tr>\n");
    for r in requests {
        let peer = r.peer.as_ref().map_or_else(
            || "-".to_owned(),
            |p| format!("{} ({})", p.registry, short_id(&p.peer.to_string())),
        );
        let class = if r.outcome == Outcome::Served {
            "ok"
        } else {
            "bad"
        };
        let _ = writeln!(
            out,
            "<tr class=\"mirrored\"><td class=\"t\" title=\"{}\">{}</td><td>{}</td><td title=\"{}\"><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{class}\">{}</td></tr>",
            escape(&ago(r.at, now)),
            escape(&utc(r.at)),
            escape(&r.registry),
            escape(&r.path),
            escape(&short_path(&r.path)),
            escape(&peer),
            bytes(r.bytes),
            millis(r.duration),
            escape(&r.outcome.to_string()),
        );
    }
    out.push_str("</table>\n");
    out
}

/// The measure form, holding `image` (as typed) when given.
pub fn measure_form(image: Option<&str>) -> String {
    format!(
        "<h2>Measure</h2>\n<p>Fetches an image's manifest and blobs from peers (nothing is stored) and times each.</p>\n\
<form method=\"get\" action=\"/debug/measure\"><label>image <input type=\"text\" name=\"image\" value=\"{}\" \
placeholder=\"registry/repository:tag or registry/repository@sha256:…\"></label> <button type=\"submit\">measure</button></form>\n",
        escape(image.unwrap_or(""))
    )
}

/// A finished measure of `image`: one row per manifest or blob, then the totals.
pub fn measurement(image: &str, m: &Measurement) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<h2>Measured <code>{}</code></h2>", escape(image));
    out.push_str("<table id=\"measure\"><tr><th>#</th><th>kind</th><th>digest</th><th>peer</th><th>lookup</th><th>transfer</th><th>bytes</th><th>throughput</th><th>result</th></tr>\n");
    let (mut lookup, mut transfer) = (Duration::ZERO, Duration::ZERO);
    for (i, step) in m.steps.iter().enumerate() {
        lookup += step.lookup;
        transfer += step.transfer;
        let digest = step
            .digest
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        let peer = step.peer.as_ref().map_or_else(
            || "-".to_owned(),
            |p| format!("{} ({})", p.registry, short_id(&p.peer.to_string())),
        );
        let (class, result) = match &step.error {
            None => ("ok", "ok".to_owned()),
            Some(e) => ("bad", e.clone()),
        };
        let _ = writeln!(
            out,
            "<tr class=\"blob\"><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\" data-bytes=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"{class}\">{}</td></tr>",
            i + 1,
            step.kind,
            escape(&digest),
            escape(&peer),
            millis(step.lookup),
            millis(step.transfer),
            step.bytes,
            bytes(step.bytes),
            throughput(step.bytes, step.transfer),
            escape(&result),
        );
    }
    let total = m.bytes();
    let _ = writeln!(
        out,
        "<tr class=\"total\"><td colspan=\"4\">total ({} fetched, wall time {})</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\" data-bytes=\"{total}\">{}</td><td class=\"n\">{}</td><td></td></tr>",
        m.steps.len(),
        millis(m.total),
        millis(lookup),
        millis(transfer),
        bytes(total),
        throughput(total, m.total),
    );
    out.push_str("</table>\n");
    match &m.stopped {
        Some(why) => {
            let _ = writeln!(
                out,
                "<p id=\"measure-end\" class=\"bad\">Stopped: {}.</p>",
                escape(why)
            );
        }
        None => {
            let failed = m.steps.iter().filter(|s| s.error.is_some()).count();
            let _ = writeln!(
                out,
                "<p id=\"measure-end\" class=\"{}\">Done: {} of {} fetched and verified.</p>",
                if failed == 0 { "ok" } else { "bad" },
                m.steps.len() - failed,
                m.steps.len()
            );
        }
    }
    out
}

/// `/v2/<repository>/<kind>/<reference>` without `/v2/` and with digests cut to 12 hex
/// characters (the whole path is in the cell's title).
fn short_path(path: &str) -> String {
    let path = path.strip_prefix("/v2/").unwrap_or(path);
    match path.split_once("sha256:") {
        Some((head, hex)) if hex.len() > 12 => {
            let cut = hex.get(..12).unwrap_or(hex);
            format!("{head}sha256:{cut}…")
        }
        _ => path.to_owned(),
    }
}

/// A short form of a peer ID: its last 8 characters.
fn short_id(id: &str) -> String {
    let start = id.len().saturating_sub(8);
    format!("…{}", id.get(start..).unwrap_or(id))
}

/// A note when a table was cut at [`MAX_ROWS`].
fn more(out: &mut String, total: usize) {
    if total > MAX_ROWS {
        let _ = writeln!(
            out,
            "<p class=\"note\">… and {} more.</p>",
            total - MAX_ROWS
        );
    }
}

/// `value` encoded for a form query (for the measure links).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

    use std::time::UNIX_EPOCH;

    use spegel_oci::Digest;
    use spegel_registry::{BlobKind, Measured};
    use spegel_routing::{PeerId, Provider};

    use super::*;

    fn provider() -> Provider {
        Provider {
            peer: PeerId::random(),
            registry: "10.0.0.7:5000".parse().unwrap(),
        }
    }

    #[test]
    fn peers_show_address_zone_and_last_seen() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let peer = PeerSummary {
            id: PeerId::random(),
            registry: Some("10.0.0.7:5000".parse().unwrap()),
            connected: true,
            last_seen: Some(now - Duration::from_secs(5)),
        };
        let row = PeerRow {
            peer: peer.clone(),
            zone: Some("zone-<b>".into()),
        };
        let html = peers(Some(&[row]), now);
        assert!(html.contains("1 known, 1 connected now"));
        assert!(html.contains(&peer.id.to_string()));
        assert!(html.contains("<td>10.0.0.7:5000</td>"));
        assert!(html.contains("zone-&lt;b&gt;"));
        assert!(html.contains("5s ago"));
        let unknown = PeerRow {
            peer: PeerSummary {
                registry: None,
                last_seen: None,
                connected: false,
                ..peer
            },
            zone: None,
        };
        let html = peers(Some(&[unknown]), now);
        assert!(html.contains("(not identified yet)") && html.contains("<td>(none)</td>"));
        assert!(peers(None, now).contains("not started yet"));
    }

    #[test]
    fn advertised_lists_image_tags_and_counts_digests() {
        let d = Digest::sha256_of(b"x");
        let keys = [
            Key::Tag("10.0.0.1:5000/team/app:v1".into()),
            Key::Digest(d.clone()),
            Key::InFlight(d),
        ];
        let html = advertised(Some(&keys));
        assert!(html.contains("1 image tags, 1 digests, 1 in-flight keys"));
        assert!(html.contains("<code>10.0.0.1:5000/team/app:v1</code>"));
        assert!(html.contains("/debug/measure?image=10.0.0.1%3A5000%2Fteam%2Fapp%3Av1"));
    }

    #[test]
    fn mirrored_requests_escape_what_a_client_chose() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        let request = MirroredRequest {
            at: now,
            registry: "<img src=x>".into(),
            path: "/v2/a/blobs/sha256:1".into(),
            peer: Some(provider()),
            bytes: 2048,
            duration: Duration::from_millis(3),
            outcome: Outcome::Served,
        };
        let html = mirrored(Some(&[request]), now);
        assert!(html.contains("&lt;img src=x&gt;"));
        assert!(!html.contains("<img"));
        assert!(html.contains("10.0.0.7:5000"));
        assert!(html.contains("2.0 KiB") && html.contains("3.0 ms") && html.contains(">served<"));
        assert!(mirrored(Some(&[]), now).contains("None yet"));
        let long = format!("/v2/a/b/blobs/sha256:{}", "c".repeat(64));
        assert_eq!(short_path(&long), "a/b/blobs/sha256:cccccccccccc…");
        assert_eq!(short_path("/v2/a/manifests/v1"), "a/manifests/v1");
    }

    #[test]
    fn a_measurement_shows_each_blob_and_the_totals() {
        let m = Measurement {
            steps: vec![
                Measured {
                    kind: BlobKind::Manifest,
                    digest: Some(Digest::sha256_of(b"m")),
                    lookup: Duration::from_millis(2),
                    transfer: Duration::from_millis(1),
                    bytes: 500,
                    peer: Some(provider()),
                    error: None,
                },
                Measured {
                    kind: BlobKind::Layer,
                    digest: Some(Digest::sha256_of(b"l")),
                    lookup: Duration::from_millis(3),
                    transfer: Duration::from_secs(1),
                    bytes: 4_000_000,
                    peer: Some(provider()),
                    error: Some("the peer's stream broke: <eof>".into()),
                },
            ],
            stopped: None,
            total: Duration::from_secs(2),
        };
        let html = measurement("10.0.0.1:5000/a:v1", &m);
        assert_eq!(html.matches("<tr class=\"blob\">").count(), 2);
        assert!(html.contains("data-bytes=\"4000000\""));
        assert!(html.contains("4.0 MB/s"));
        assert!(html.contains("data-bytes=\"4000500\""), "total bytes");
        assert!(
            html.contains("2.0 MB/s"),
            "total throughput over the wall time"
        );
        assert!(html.contains("&lt;eof&gt;"));
        assert!(html.contains("Done: 1 of 2 fetched and verified."));
    }
}
