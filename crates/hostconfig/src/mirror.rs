//! The registry hosts directory (`certs.d`) on disk: which directories spegel configures,
//! atomic writes, backups, and putting everything back.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::hosts::{self, Mirrors, Origin, RenderError};
use crate::target::DEFAULT_DIR;
use crate::{BACKUP, Error, HOSTS_TOML, MirrorTarget, Result, UpstreamRegistry};

/// Mode of files spegel creates: containerd runs as root, but operators read them.
const NEW_FILE_MODE: u32 = 0o644;

/// What [`configure`] should make containerd do.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// containerd's registry hosts directory, its CRI `registry.config_path`.
    pub hosts_dir: PathBuf,
    /// The registries to mirror. Empty means every registry: `_default` plus every
    /// registry that has a directory of its own (which containerd prefers to `_default`).
    pub registries: Vec<UpstreamRegistry>,
    /// The mirrors to put first, in order.
    pub mirrors: Vec<MirrorTarget>,
    /// Whether containerd may resolve tags through the mirrors (`resolve` capability).
    pub resolve_tags: bool,
}

/// What happened to one registry directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The registry directory (`certs.d/<registry>`).
    pub dir: PathBuf,
    /// What was done.
    pub action: Action,
}

/// What [`configure`] or [`cleanup`] did to a registry directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A `hosts.toml` was written where there was none.
    Created,
    /// The mirror was put first into an existing `hosts.toml`, whose original was backed up.
    Injected,
    /// spegel's `hosts.toml` was rewritten (the flags changed).
    Updated,
    /// spegel's `hosts.toml` already said exactly this.
    Unchanged,
    /// The original `hosts.toml` was put back.
    Restored,
    /// spegel's `hosts.toml` (and the directory, if spegel created it) was removed.
    Removed,
    /// A backup of an original that someone else has since replaced was deleted.
    DroppedStaleBackup,
    /// The directory was left alone; the reason says what the operator should know.
    Skipped(String),
}

/// Writes the mirror configuration, idempotently: running it twice changes nothing.
/// Directories spegel manages that the flags no longer name are put back as they were.
pub fn configure(config: &MirrorConfig) -> Result<Vec<Change>> {
    let mirrors = Mirrors {
        targets: &config.mirrors,
        resolve_tags: config.resolve_tags,
    };
    if !config.hosts_dir.is_dir() {
        std::fs::create_dir_all(&config.hosts_dir).map_err(io("create", &config.hosts_dir))?;
    }
    let existing = registry_dirs(&config.hosts_dir)?;
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    if config.registries.is_empty() {
        targets.push((DEFAULT_DIR.to_owned(), None));
        for (name, dir) in &existing {
            // Directories spegel created for a registry are not needed when `_default` serves all.
            let created = matches!(
                managed_origin(dir)?,
                Some(Origin::CreatedDir | Origin::CreatedFile)
            );
            if name != DEFAULT_DIR && !created {
                targets.push((name.clone(), None));
            }
        }
    } else {
        for registry in &config.registries {
            targets.push((registry.dir_name().to_owned(), Some(registry.server())));
        }
    }
    let mut changes = Vec::new();
    for (name, dir) in &existing {
        if !targets.iter().any(|(target, _)| target == name) {
            changes.extend(restore(dir)?);
        }
    }
    for (name, server) in &targets {
        let dir = config.hosts_dir.join(name);
        let action = match apply(&dir, server.as_deref(), mirrors) {
            Ok(action) => action,
            // One registry's broken file must not keep spegel from every other registry:
            // reported, left as it is (this registry bypasses spegel until it is fixed).
            Err(e @ (Error::Toml { .. } | Error::UnsupportedHosts { .. })) => Action::Skipped(
                format!("{e}; left as it is, so this registry bypasses spegel"),
            ),
            Err(e) => return Err(e),
        };
        changes.push(Change { dir, action });
    }
    Ok(changes)
}

/// Puts back every registry directory spegel changed: originals are restored byte for byte,
/// files and directories spegel created are removed.
pub fn cleanup(hosts_dir: &Path) -> Result<Vec<Change>> {
    if !hosts_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    for (_, dir) in registry_dirs(hosts_dir)? {
        changes.extend(restore(&dir)?);
    }
    Ok(changes)
}

/// Writes spegel's `hosts.toml` into `dir`.
fn apply(dir: &Path, server: Option<&str>, mirrors: Mirrors<'_>) -> Result<Action> {
    let file = dir.join(HOSTS_TOML);
    let backup = dir.join(BACKUP);
    let dir_exists = dir.is_dir();
    let current = read_optional(&file)?;
    let (origin, original, foreign) = match &current {
        None if dir_exists && !is_empty(dir)? => {
            return Ok(Action::Skipped(format!(
                "{} has files but no {HOSTS_TOML}: containerd uses it instead of _default, so this registry bypasses spegel; give it a {HOSTS_TOML}",
                dir.display()
            )));
        }
        None if dir_exists => (Origin::CreatedFile, None, false),
        None => (Origin::CreatedDir, None, false),
        Some(bytes) => match Origin::of(&utf8(&file, bytes)?) {
            Some(Origin::Replaced) => match read_optional(&backup)? {
                Some(original) => (Origin::Replaced, Some(original), false),
                None => return Err(Error::BackupMissing { path: file, backup }),
            },
            Some(origin) => (origin, None, false),
            None => (Origin::Replaced, Some(bytes.clone()), true),
        },
    };
    let original_text = match &original {
        Some(bytes) => Some(utf8(if foreign { &file } else { &backup }, bytes)?),
        None => None,
    };
    let rendered =
        hosts::render(original_text.as_deref(), server, mirrors, origin).map_err(|e| match e {
            RenderError::Toml(message) => Error::Toml {
                path: file.clone(),
                message,
            },
            RenderError::UnsupportedHosts => Error::UnsupportedHosts { path: file.clone() },
        })?;
    if current.as_deref() == Some(rendered.as_bytes()) {
        return Ok(Action::Unchanged);
    }
    if !dir_exists {
        std::fs::create_dir(dir).map_err(io("create", dir))?;
    }
    let mode = match &current {
        Some(_) => {
            std::fs::metadata(&file)
                .map_err(io("stat", &file))?
                .permissions()
                .mode()
                & 0o7777
        }
        None => NEW_FILE_MODE,
    };
    if let (true, Some(original)) = (foreign, &original) {
        write_atomically(&backup, original, mode)?;
    }
    write_atomically(&file, rendered.as_bytes(), mode)?;
    Ok(match (foreign, current.is_none()) {
        (true, _) => Action::Injected,
        (false, true) => Action::Created,
        (false, false) => Action::Updated,
    })
}

/// Undoes spegel's `hosts.toml` in `dir`, if it has one.
fn restore(dir: &Path) -> Result<Option<Change>> {
    let file = dir.join(HOSTS_TOML);
    let backup = dir.join(BACKUP);
    let change = |action| {
        Ok(Some(Change {
            dir: dir.to_owned(),
            action,
        }))
    };
    match managed_origin(dir)? {
        Some(Origin::Replaced) => {
            if !backup.is_file() {
                return Err(Error::BackupMissing { path: file, backup });
            }
            std::fs::rename(&backup, &file).map_err(io("restore", &file))?;
            sync_dir(dir)?;
            change(Action::Restored)
        }
        Some(origin) => {
            std::fs::remove_file(&file).map_err(io("remove", &file))?;
            if origin == Origin::CreatedDir {
                // Someone may have added files since: then the directory stays.
                let _ = std::fs::remove_dir(dir);
            }
            change(Action::Removed)
        }
        None if backup.is_file() => {
            std::fs::remove_file(&backup).map_err(io("remove", &backup))?;
            change(Action::DroppedStaleBackup)
        }
        None => Ok(None),
    }
}

/// The origin recorded in `dir/hosts.toml`, if spegel wrote it.
fn managed_origin(dir: &Path) -> Result<Option<Origin>> {
    let file = dir.join(HOSTS_TOML);
    Ok(match read_optional(&file)? {
        Some(bytes) => std::str::from_utf8(&bytes).ok().and_then(Origin::of),
        None => None,
    })
}

/// The registry directories in `hosts_dir`, sorted by name (hidden ones left out).
fn registry_dirs(hosts_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(hosts_dir).map_err(io("list", hosts_dir))? {
        let entry = entry.map_err(io("list", hosts_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            dirs.push((name, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

fn utf8(path: &Path, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Toml {
        path: path.to_owned(),
        message: "it is not UTF-8".to_owned(),
    })
}

fn is_empty(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .next()
        .is_none())
}

/// temp file beside `path` → write → chmod → fsync → rename → fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".spegel-tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    temp.write_all(bytes).map_err(io("write", temp.path()))?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(io("fsync", temp.path()))?;
    temp.persist(path)
        .map_err(|e| io("replace", path)(e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("fsync", dir))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
