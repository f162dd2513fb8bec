//! `spegel-certs`: writes a development CA, a bootstrapper server certificate and one client
//! cert dir per node. For development and tests only; see certs/README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use spegel_certs::{Authority, Validity, create_dir, write_cert_dir, write_private, write_public};

/// Exit code for a command line an operator must fix (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// Generate development certificates for spegel-bootstrapper's mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "spegel-certs", version, about, long_about = None)]
struct Cli {
    /// Directory to write into (gitignored under certs/dev).
    #[arg(long, env = "SPEGEL_CERTS_OUT_DIR", default_value = "certs/dev")]
    out_dir: PathBuf,
    /// DNS name or IP address the server certificate is valid for (repeat for more).
    #[arg(
        long = "server-name",
        env = "SPEGEL_CERTS_SERVER_NAMES",
        value_delimiter = ',',
        default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()]
    )]
    server_names: Vec<String>,
    /// Node name to issue a client cert dir for (repeat for more).
    #[arg(
        long = "node",
        env = "SPEGEL_CERTS_NODES",
        value_delimiter = ',',
        default_values_t = ["node-a".to_owned()]
    )]
    nodes: Vec<String>,
    /// Days the certificates stay valid.
    #[arg(long, env = "SPEGEL_CERTS_DAYS", default_value_t = 365)]
    days: i64,
    /// Overwrite an existing set (a new CA invalidates every certificate issued before).
    #[arg(long, env = "SPEGEL_CERTS_FORCE")]
    force: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match generate(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spegel-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(cli: &Cli) -> anyhow::Result<()> {
    let ca_file = cli.out_dir.join("ca.crt");
    if ca_file.exists() && !cli.force {
        bail!(
            "{} already exists; pass --force to replace the whole set",
            ca_file.display()
        );
    }
    let validity = Validity::days(cli.days);
    let ca = Authority::new("spegel development CA", validity).context("CA")?;
    create_dir(&cli.out_dir)?;
    write_public(&ca_file, &ca.cert_pem())?;
    write_private(&cli.out_dir.join("ca.key"), &ca.key_pem())?;

    let server = ca
        .server(&cli.server_names, validity)
        .context("server certificate")?;
    let server_dir = cli.out_dir.join("server");
    create_dir(&server_dir)?;
    write_public(&server_dir.join("tls.crt"), &server.cert_pem)?;
    write_private(&server_dir.join("tls.key"), &server.key_pem)?;
    println!(
        "bootstrapper: --tls-cert-file {0}/tls.crt --tls-key-file {0}/tls.key --client-ca-file {1}",
        server_dir.display(),
        ca_file.display()
    );

    for node in &cli.nodes {
        let client = ca
            .client(node, validity)
            .with_context(|| format!("client certificate for {node}"))?;
        let dir = cli.out_dir.join("nodes").join(node);
        write_cert_dir(&dir, &ca.cert_pem(), &client)?;
        println!("node {node}: --http-bootstrap-cert-dir {}", dir.display());
    }
    Ok(())
}
