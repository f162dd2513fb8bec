//! The single byte range a blob request may ask for (`Range: bytes=…`).
//!
//! Syntax is checked by `http-range-header`; what spegel accepts on top of that is decided
//! here: exactly one range (several → 400, as Spegel does), and a range past the end → 416.

use std::num::NonZeroUsize;

use http_range_header::RangeUnsatisfiableError;

/// Why a `Range` header cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the Range header is malformed or asks for more than one range")]
    Malformed,
    #[error("the Range header asks for bytes past the end of the content")]
    Unsatisfiable,
}

/// An inclusive byte range `first..=last` that lies within the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a `ByteRange` holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` header value for content of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.first, self.last, size)
    }
}

/// Parses a `Range` header value against content of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> Result<ByteRange, RangeError> {
    let one = NonZeroUsize::MIN;
    let parsed = http_range_header::parse_range_header_with_max_ranges(header, one)
        .map_err(|_| RangeError::Malformed)?;
    let ranges = parsed.validate(size).map_err(|e| match e {
        RangeUnsatisfiableError::Unsatisfiable => RangeError::Unsatisfiable,
        _ => RangeError::Malformed,
    })?;
    match ranges.as_slice() {
        [r] => Ok(ByteRange {
            first: *r.start(),
            last: *r.end(),
        }),
        // Empty content has no byte to range over.
        [] => Err(RangeError::Unsatisfiable),
        _ => Err(RangeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u64, last: u64) -> Result<ByteRange, RangeError> {
        Ok(ByteRange { first, last })
    }

    #[test]
    fn ranges_are_one_satisfiable_span_or_an_error() {
        use RangeError::*;
        let cases: &[(&str, u64, Result<ByteRange, RangeError>)] = &[
            ("bytes=0-99", 1000, r(0, 99)),
            ("bytes=100-", 1000, r(100, 999)),
            ("bytes=-100", 1000, r(900, 999)),
            ("bytes=0-5000", 1000, r(0, 999)),
            ("bytes=-5000", 1000, r(0, 999)),
            ("bytes=999-999", 1000, r(999, 999)),
            ("bytes=1000-", 1000, Err(Unsatisfiable)),
            ("bytes=1000-2000", 1000, Err(Unsatisfiable)),
            ("bytes=18446744073709551615-", 1000, Err(Unsatisfiable)),
            ("bytes=0-", 0, Err(Unsatisfiable)),
            ("bytes=-0", 1000, Err(Unsatisfiable)),
            ("bytes=0-1,5-6", 1000, Err(Malformed)),
            ("bytes=5-1", 1000, Err(Malformed)),
            ("bytes=a-b", 1000, Err(Malformed)),
            ("bytes=", 1000, Err(Malformed)),
            ("items=0-1", 1000, Err(Malformed)),
            ("bytes=0 -1", 1000, Err(Malformed)),
            ("bytes=+1-2", 1000, Err(Malformed)),
            ("", 1000, Err(Malformed)),
            (
                "bytes=0-99999999999999999999999999999999999999999",
                1000,
                Err(Malformed),
            ),
        ];
        for (header, size, want) in cases {
            assert_eq!(&parse_range(header, *size), want, "{header:?} of {size}");
        }
    }

    #[test]
    fn content_range_names_the_span_and_the_size() {
        let range = parse_range("bytes=10-19", 100).unwrap();
        assert_eq!(range.len(), 10);
        assert_eq!(range.content_range(100), "bytes 10-19/100");
    }
}
