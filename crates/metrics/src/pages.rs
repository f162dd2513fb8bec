//! [`Pages`]: the seam through which the metrics server answers `/debug/` paths with pages
//! another crate renders, so this crate never learns what they show.

use std::future::Future;
use std::pin::Pin;

use http::StatusCode;

/// Paths under this prefix (and the prefix without its slash) go to the [`Pages`].
pub const PAGES_PREFIX: &str = "/debug/";

/// A boxed future, as trait objects need them.
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Page> + Send + 'a>>;

/// A page to send: its status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Page {
    /// An HTML page (`text/html; charset=utf-8`).
    pub fn html(status: StatusCode, body: String) -> Page {
        Page {
            status,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }
}

/// Answers `GET` requests for paths under [`PAGES_PREFIX`] on the metrics address (other
/// methods get 405 without reaching it).
pub trait Pages: Send + Sync + 'static {
    /// The page for `path` (starting with `/debug`) and its raw query string.
    fn get<'a>(&'a self, path: &'a str, query: Option<&'a str>) -> PageFuture<'a>;
}
