//! OCI distribution vocabulary for spegel, parsed at the edge.
//!
//! Owns the types every other crate speaks in: [`Digest`], [`Repository`], [`Reference`],
//! the `/v2` [`Route`] parser, single byte ranges ([`ByteRange`]), manifest media types and
//! the OCI error codes that decide a response's status and JSON body ([`ErrorCode`],
//! [`RegistryError`]).
//!
//! This crate does no I/O and must never call the network, the filesystem or containerd:
//! everything here is a pure function with a table of tests.

mod digest;
mod error;
mod filter;
mod manifest;
mod media_type;
mod range;
mod reference;
mod route;

pub use digest::{Algorithm, Digest, DigestError, Verifier};
pub use error::{ErrorCode, RegistryError};
pub use filter::{FilterError, ImageFilter};
pub use manifest::referenced_digests;
pub use media_type::{MediaType, detect_manifest_media_type};
pub use range::{ByteRange, RangeError, parse_range};
pub use reference::{ImageName, Reference, Repository, Tag};
pub use route::{Route, parse_route, registry_from_query};
