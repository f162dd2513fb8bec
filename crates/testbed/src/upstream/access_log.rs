//! Reading distribution's access log: Apache combined format on the registry's stdout,
//! e.g. `127.0.0.1 - - [23/Nov/2026:13:29:31 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "ua"`.

/// One request the upstream registry logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The client's address as the registry saw it, e.g. `10.231.0.3`.
    pub client: String,
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/v2/test/img/blobs/sha256:…`.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Bytes of response body sent (0 where the log says `-`).
    pub bytes: u64,
}

impl LoggedRequest {
    /// Whether this is a `GET` of a blob (not a blob upload).
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && is_blob_path(&self.path)
    }

    /// Whether this asks for a manifest (`GET` or `HEAD`).
    pub fn is_manifest_request(&self) -> bool {
        (self.method == "GET" || self.method == "HEAD") && self.path.contains("/manifests/")
    }
}

/// Parses every access-log line in `text`, skipping lines of any other shape.
pub(super) fn parse(text: &str) -> Vec<LoggedRequest> {
    text.lines().filter_map(parse_line).collect()
}

/// Parses one combined-format line.
fn parse_line(line: &str) -> Option<LoggedRequest> {
    let client = line.split_whitespace().next()?;
    let (_, rest) = line.split_once('"')?;
    let (request_line, rest) = rest.split_once('"')?;
    let mut request = request_line.split_whitespace();
    let method = request.next()?;
    let path = request.next()?;
    let protocol = request.next()?;
    if !protocol.starts_with("HTTP/") || request.next().is_some() {
        return None;
    }
    let mut fields = rest.split_whitespace();
    let status = fields.next()?.parse().ok()?;
    let bytes = fields.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    Some(LoggedRequest {
        client: client.to_owned(),
        bytes,
        method: method.to_owned(),
        path: path.to_owned(),
        status,
    })
}

/// `/v2/<name>/blobs/<algorithm>:<hex>`, where `<name>` may contain slashes.
fn is_blob_path(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let Some(rest) = path.strip_prefix("/v2/") else {
        return false;
    };
    match rest.rsplit_once("/blobs/") {
        Some((name, digest)) => !name.is_empty() && digest.contains(':') && !digest.contains('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_log_lines_parse_into_method_path_and_status() {
        let cases = [
            (
                r#"127.0.0.1 - - [23/Nov/2026:13:29:31 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "containerd/1.6.20""#,
                Some(("GET", "/v2/", 200)),
            ),
            (
                r#"127.0.0.1 - - [23/Nov/2026:13:29:31 +0000] "HEAD /v2/a/b/manifests/v1 HTTP/1.1" 200 0 "" "x""#,
                Some(("HEAD", "/v2/a/b/manifests/v1", 200)),
            ),
            (
                r#"time="2026-11-23T13:29:31Z" level=info msg="response completed""#,
                None,
            ),
            ("", None),
            (r#"x "GET /v2/ HTTP/1.1" abc"#, None),
        ];
        for (line, expected) in cases {
            let parsed = parse_line(line);
            let parsed = parsed
                .as_ref()
                .map(|r| (r.method.as_str(), r.path.as_str(), r.status));
            assert_eq!(parsed, expected, "{line}");
        }
    }

    #[test]
    fn the_client_and_the_bytes_sent_are_read() {
        let line = r#"10.231.0.3 - - [23/Nov/2026:13:29:31 +0000] "GET /v2/a/blobs/sha256:1 HTTP/1.1" 200 1048576 "" "x""#;
        let parsed = parse_line(line).unwrap();
        assert_eq!(parsed.client, "10.231.0.3");
        assert_eq!(parsed.bytes, 1_048_576);
    }

    #[test]
    fn blob_gets_are_told_apart_from_uploads_and_manifests() {
        let cases = [
            ("GET", "/v2/test/img/blobs/sha256:abc", true),
            ("GET", "/v2/a/b/c/blobs/sha256:abc", true),
            ("HEAD", "/v2/test/img/blobs/sha256:abc", false),
            ("GET", "/v2/test/img/blobs/uploads/", false),
            ("GET", "/v2/test/img/blobs/uploads/1234?_state=x", false),
            ("GET", "/v2/test/img/manifests/v1", false),
            ("GET", "/v2/", false),
        ];
        for (method, path, expected) in cases {
            let request = LoggedRequest {
                client: "127.0.0.1".to_owned(),
                method: method.to_owned(),
                path: path.to_owned(),
                status: 200,
                bytes: 0,
            };
            assert_eq!(request.is_blob_get(), expected, "{method} {path}");
        }
    }
}
