//! The one place where errors meet the wire: an OCI error code decides the HTTP status and
//! the `{"errors":[{"code":…,"message":…}]}` body.

use http::StatusCode;

/// OCI distribution error codes spegel answers with, each owning its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The blob is not held here (nor, for a mirrored request, by any peer).
    BlobUnknown,
    /// The manifest or tag is not held here (nor by any peer).
    ManifestUnknown,
    /// The repository name is not valid.
    NameInvalid,
    /// The digest is malformed or uses an unsupported algorithm.
    DigestInvalid,
    /// The manifest reference is neither a valid tag nor a valid digest.
    TagInvalid,
    /// The `Range` header is malformed or asks for several ranges.
    RangeInvalid,
    /// The `Range` header asks for bytes past the end of the blob.
    RangeNotSatisfiable,
    /// The path is not part of the read-only API spegel serves.
    UnknownEndpoint,
    /// The method is not allowed: spegel is read-only.
    MethodNotAllowed,
    /// The client is neither this node's own nor a cluster member with a valid proof.
    Denied,
}

impl ErrorCode {
    /// The HTTP status sent with this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::UnknownEndpoint => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::NameInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::TagInvalid
            | ErrorCode::RangeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
        }
    }

    /// The code string in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::RangeInvalid | ErrorCode::RangeNotSatisfiable => "RANGE_INVALID",
            ErrorCode::UnknownEndpoint | ErrorCode::MethodNotAllowed => "UNSUPPORTED",
            ErrorCode::Denied => "DENIED",
        }
    }
}

/// An error a client gets: a code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
}

impl RegistryError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The OCI error body: `{"errors":[{"code":"…","message":"…"}]}`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message }]
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_oci_error_json() {
        let e = RegistryError::new(ErrorCode::BlobUnknown, "blob \"x\" unknown");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "blob \"x\" unknown");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }
}
