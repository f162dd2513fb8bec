//! The secret file: parsing, formatting and writing the libp2p pre-shared key format.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

const HEADER: &str = "/key/swarm/psk/1.0.0/";
const ENCODING: &str = "/base16/";
/// A key file is three short lines; anything much larger is not one.
const MAX_FILE_BYTES: u64 = 4096;

/// Reads the file, refusing one other users can read (it would let them join the cluster).
pub(crate) fn read(path: &Path) -> Result<String, Error> {
    let read_error = |reason| Error::Read {
        path: path.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() || metadata.len() > MAX_FILE_BYTES {
        return Err(Error::Format {
            path: path.to_owned(),
            problem: format!("not a small regular file ({} bytes)", metadata.len()),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        return Err(Error::Readable {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    String::from_utf8(bytes).map_err(|_| Error::Format {
        path: path.to_owned(),
        problem: "it is not text".to_owned(),
    })
}

/// The key bytes of a file's text, or what is wrong with it (never quoting the key).
pub(crate) fn parse(text: &str) -> Result<[u8; 32], String> {
    let mut lines = text.lines().map(str::trim);
    match lines.next() {
        Some(HEADER) => {}
        Some("") | None => return Err("it is empty".to_owned()),
        Some(_) => return Err(format!("the first line is not {HEADER}")),
    }
    match lines.next() {
        Some(ENCODING) => {}
        Some(other @ ("/base64/" | "/bin/")) => {
            return Err(format!(
                "the key is encoded as {other}; only {ENCODING} is supported"
            ));
        }
        Some(_) => return Err(format!("the second line is not {ENCODING}")),
        None => return Err("it ends after the first line".to_owned()),
    }
    let Some(key) = lines.next() else {
        return Err("the key line is missing".to_owned());
    };
    if lines.any(|line| !line.is_empty()) {
        return Err("there is more after the key line".to_owned());
    }
    if !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the key line is not hexadecimal".to_owned());
    }
    if key.len() != 64 {
        return Err(format!("the key has {} hex digits, not 64", key.len()));
    }
    let mut psk = [0u8; 32];
    hex::decode_to_slice(key, &mut psk).map_err(|_| "the key line is not hexadecimal")?;
    if psk == [0u8; 32] {
        return Err("the key is all zeros".to_owned());
    }
    Ok(psk)
}

pub(crate) fn format(psk: &[u8; 32]) -> String {
    format!("{HEADER}\n{ENCODING}\n{}\n", hex::encode(psk))
}

/// Creates `path` (which must not exist) with mode 0600 and writes `text` to it.
pub(crate) fn write_new(path: &Path, text: &str) -> Result<(), Error> {
    let write_error = |reason| Error::Write {
        path: path.to_owned(),
        reason,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Exists {
                path: path.to_owned(),
            },
            _ => write_error(e),
        })?;
    // The umask can only remove bits, but say 0600 explicitly all the same.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_error)?;
    file.write_all(text.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterSecret;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn good_files_parse() {
        let upper = KEY.to_uppercase();
        let cases = [
            format!("{HEADER}\n{ENCODING}\n{KEY}\n"),
            format!("{HEADER}\n{ENCODING}\n{KEY}"),
            format!("{HEADER}\r\n{ENCODING}\r\n{KEY}\r\n"),
            format!("{HEADER}\n{ENCODING}\n{upper}\n"),
            format!("{HEADER} \n{ENCODING}\n  {KEY}\n\n\n"),
        ];
        for text in cases {
            let psk = parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(hex::encode(psk), KEY, "{text:?}");
        }
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            (String::new(), "empty"),
            ("\n\n".to_owned(), "empty"),
            (format!("{KEY}\n"), "first line"),
            (
                format!("/key/swarm/psk/2.0.0/\n{ENCODING}\n{KEY}\n"),
                "first line",
            ),
            (format!("{HEADER}\n"), "ends after the first line"),
            (format!("{HEADER}\n/base64/\n{KEY}\n"), "only /base16/"),
            (format!("{HEADER}\n/bin/\n{KEY}\n"), "only /base16/"),
            (format!("{HEADER}\n/base32/\n{KEY}\n"), "second line"),
            (format!("{HEADER}\n{ENCODING}\n"), "key line is missing"),
            (
                format!("{HEADER}\n{ENCODING}\n{}\n", &KEY[..62]),
                "62 hex digits",
            ),
            (format!("{HEADER}\n{ENCODING}\n{KEY}00\n"), "66 hex digits"),
            (
                format!("{HEADER}\n{ENCODING}\n{}zz\n", &KEY[..62]),
                "not hexadecimal",
            ),
            (format!("{HEADER}\n{ENCODING}\n{KEY}\nmore\n"), "more after"),
            (
                format!("{HEADER}\n{ENCODING}\n{}\n", "0".repeat(64)),
                "all zeros",
            ),
        ];
        for (text, expected) in cases {
            let problem = parse(&text).expect_err(&text);
            assert!(problem.contains(expected), "{text:?}: {problem}");
            assert!(!problem.contains(&KEY[..16]), "{problem} quotes the key");
        }
    }

    #[test]
    fn a_written_secret_is_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let secret = ClusterSecret::generate().unwrap();

        secret.write_new(&path).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ClusterSecret::load(&path).unwrap(), secret);
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "keep me").unwrap();

        let error = ClusterSecret::generate().unwrap().write_new(&path);

        assert!(matches!(error, Err(Error::Exists { .. })), "{error:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[test]
    fn a_file_others_can_read_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format(&[1; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let error = ClusterSecret::load(&path).unwrap_err().to_string();

        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn a_missing_or_malformed_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = ClusterSecret::load(&missing).unwrap_err().to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");

        let bad = dir.path().join("bad");
        write_new(&bad, "hello\n").unwrap();
        let error = ClusterSecret::load(&bad).unwrap_err().to_string();
        assert!(error.contains(&bad.display().to_string()), "{error}");
        assert!(error.contains("generate-secret"), "{error}");
    }
}
