//! Fuzzes everything spegel parses from a request before any handler runs: the path, the
//! `ns` query parameter and the `Range` header. None of them may panic, and whatever route
//! comes out must only hold names and digests that are safe to use as path components.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spegel_oci::{Route, parse_range, parse_route, registry_from_query};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, rest) = text.split_once('?').unwrap_or((text, ""));
    match parse_route(path) {
        Ok(Route::Blob { repository, digest }) | Ok(Route::Manifest { repository, reference: spegel_oci::Reference::Digest(digest) }) => {
            assert!(!repository.as_str().contains(".."));
            assert!(!digest.hex().contains('/'));
        }
        _ => {}
    }
    if let Some(ns) = registry_from_query(Some(rest)) {
        assert!(!ns.contains('/'));
    }
    for size in [0, 1, 1000, u64::MAX] {
        if let Ok(range) = parse_range(rest, size) {
            assert!(range.first <= range.last && range.last < size);
        }
    }
});
