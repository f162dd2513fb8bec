//! `spegel-node configuration` and `spegel-node cleanup`: containerd's mirror configuration
//! written and put back (the logic is in `spegel-hostconfig`).

use spegel_hostconfig::{Action, Change, MirrorConfig, MirrorTarget, UpstreamRegistry};
use tracing::{info, warn};

use crate::config::{CleanupArgs, ConfigurationArgs};
use crate::exit::{BadConfig, classify};

/// Writes the `hosts.toml` files that make containerd ask spegel first.
pub fn configure(args: &ConfigurationArgs) -> anyhow::Result<()> {
    let registries: Vec<UpstreamRegistry> = parse_list(&args.mirrored_registries)?;
    let mirrors: Vec<MirrorTarget> = parse_list(&args.mirror_targets)?;
    if mirrors.is_empty() {
        return Err(BadConfig(
            "--mirror-targets names no mirror: give the spegel registry's URL, e.g. http://127.0.0.1:5000".to_owned(),
        )
        .into());
    }
    let config = MirrorConfig {
        hosts_dir: args.containerd_registry_config_path.clone(),
        registries,
        mirrors,
        resolve_tags: args.resolve_tags,
    };
    let changes = spegel_hostconfig::configure(&config).map_err(classify)?;
    report(&changes);
    info!(hosts_dir = %config.hosts_dir.display(), "containerd mirror configuration written");
    Ok(())
}

/// Restores what `configure` changed.
pub fn cleanup(args: &CleanupArgs) -> anyhow::Result<()> {
    let changes =
        spegel_hostconfig::cleanup(&args.containerd_registry_config_path).map_err(classify)?;
    report(&changes);
    info!(hosts_dir = %args.containerd_registry_config_path.display(), "containerd mirror configuration restored");
    Ok(())
}

/// Comma-separated flag values to types; empty entries (an empty environment variable) are
/// skipped.
fn parse_list<T>(values: &[String]) -> anyhow::Result<Vec<T>>
where
    T: std::str::FromStr<Err = spegel_hostconfig::Error>,
{
    values
        .iter()
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
        .map(|value| value.parse().map_err(classify))
        .collect()
}

fn report(changes: &[Change]) {
    for change in changes {
        let dir = change.dir.display();
        match &change.action {
            Action::Skipped(reason) => warn!(%dir, %reason, "left alone"),
            action => info!(%dir, action = ?action, "registry directory"),
        }
    }
}
