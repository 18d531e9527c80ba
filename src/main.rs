//! The `ringress` command line: `run`, `check`, `demo` and `generate-ticket-key`.
//! Everything else lives in the library; this file only parses arguments, sets up
//! logging and reports errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringress::access_log;
use ringress::control::{self, RunOptions, ShardCount};
use ringress::demo::{self, DemoOptions};
use ringress::http::PathNormalization;
use ringress::proxy::{
    ConnectionLimits, DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, RecordLayer,
    Settings, Timeouts,
};

#[derive(Parser)]
#[command(
    name = "ringress",
    version,
    about = "Istio-compatible TLS ingress gateway on io_uring"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace or off (or directives such as
    /// `info,ringress::proxy=debug`).
    #[arg(long, global = true, default_value = "info", value_parser = log_filter)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

/// `ringress run`'s flags.
#[derive(clap::Args)]
struct RunArgs {
    /// The Istio manifests to serve (several YAML documents).
    #[arg(long)]
    config: PathBuf,
    /// Shard threads, one per core: a number or `auto`.
    #[arg(long, default_value = "auto")]
    shards: ShardCount,
    /// Where `credentialName` resolves: DIR/NAME/tls.crt and tls.key.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Steer each new connection to the shard on the CPU that received it.
    #[arg(long)]
    steer_by_cpu: bool,
    /// Seconds a client has for the TLS handshake and each request head.
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Seconds an idle keep-alive client connection stays open.
    #[arg(long, default_value_t = 60.0)]
    keepalive_timeout: f64,
    /// Seconds of silence allowed mid-body, and for a response head when the route
    /// sets no `timeout`.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// The admin endpoint (/certs, /stats/prometheus, /ready, /config_dump,
    /// POST /reload): an address, or `off`.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: String,
    /// An address answering only `GET /healthz/ready` (200 while serving, 503 once
    /// draining), for load balancers and Kubernetes probes, e.g. 0.0.0.0:15021 as
    /// Istio's gateway pods (default: off).
    #[arg(long)]
    health: Option<std::net::SocketAddr>,
    /// A Unix socket for zero-downtime binary upgrades: at start, ringress takes
    /// the listening sockets of the ringress offering them there (then that one
    /// drains), and it offers its own there for the next; SIGUSR2 starts the
    /// binary again to do so.
    #[arg(long)]
    upgrade_socket: Option<PathBuf>,
    /// Seconds SIGTERM/SIGINT give in-flight requests before exiting.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Seconds between fetches of the remote JWT key sets (`jwksUri`) of
    /// RequestAuthentication and Policy rules; they are also fetched at start and
    /// when a reload adds a source.
    #[arg(long, default_value_t = 1200.0)]
    jwks_refresh_interval: f64,
    /// Do not watch certificate files, credentials and the config for changes
    /// (reload only on SIGHUP or POST /reload).
    #[arg(long)]
    no_watch: bool,
    /// Who protects established TLS 1.3 connections: `ringress` (its own record
    /// layer, lighter) or `rustls` (rustls' record layer throughout).
    #[arg(long, default_value = "ringress")]
    tls_record_layer: RecordLayer,
    /// How request paths are normalised before routing (Istio's
    /// `pathNormalization`): NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES.
    #[arg(long, default_value = "BASE")]
    path_normalization: PathNormalization,
    /// Proxies in front of the gateway that append the client's address to
    /// `x-forwarded-for` (Istio's `numTrustedProxies`): AuthorizationPolicy's
    /// `remoteIpBlocks` and `remote.ip` read the address that many entries from the
    /// header's right end; 0 reads the connection's peer.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=32))]
    trusted_proxies: u8,
    /// Client connections one shard serves at once; more are reset at accept
    /// (default: what the open-file limit allows, at most 16384).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Client connections one address may have open on one shard; more are reset
    /// at accept (default: no cap).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_client: Option<u32>,
    /// Streams an HTTP/2 client may have open at once on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[arg(long, default_value_t = DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    http2_max_concurrent_streams: u32,
    /// Where the access log goes: `-` (stdout, as Istio's gateway), a file, or `off`.
    #[arg(long, default_value = "-")]
    access_log: access_log::Target,
    /// `text` (Istio's default line), `json` (Istio's JSON), or a line of Envoy
    /// command operators such as "%REQ(:METHOD)% %RESPONSE_CODE% %DURATION%".
    #[arg(long, default_value = "text")]
    access_log_format: access_log::Format,
    /// A file of session-ticket keys shared by every replica (one base64 key of 48
    /// bytes per line; the first seals new tickets, all open them); re-read at
    /// every reload. Without it, each process has random keys of its own.
    #[arg(long)]
    session_ticket_keys: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Gateways of a configuration file.
    Run(Box<RunArgs>),
    /// Validate a configuration fully and print what it would serve; exit 1 on error.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
        /// The session-ticket key file `run` would read.
        #[arg(long)]
        session_ticket_keys: Option<PathBuf>,
    },
    /// Print a new line for a --session-ticket-keys file (the base64 of 48 random
    /// bytes, as `openssl rand -base64 48` makes).
    GenerateTicketKey,
    /// Generate certificates, start a built-in httpbin and serve the walkthrough.
    Demo {
        /// Where to write certificates and the config (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        #[arg(long, default_value = "auto")]
        shards: ShardCount,
        /// The admin endpoint: an address, or `off`.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `log_filter` accepted it.
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run(args) => (|| {
            let RunArgs {
                config,
                shards,
                secrets_dir,
                steer_by_cpu,
                header_timeout,
                keepalive_timeout,
                idle_timeout,
                admin,
                health,
                upgrade_socket,
                drain_timeout,
                jwks_refresh_interval,
                no_watch,
                tls_record_layer,
                path_normalization,
                trusted_proxies,
                max_connections,
                max_connections_per_client,
                http2_max_concurrent_streams,
                access_log,
                access_log_format,
                session_ticket_keys,
            } = *args;
            let settings = Settings {
                timeouts: Timeouts {
                    header: seconds(header_timeout, "--header-timeout")?,
                    keepalive: seconds(keepalive_timeout, "--keepalive-timeout")?,
                    idle: seconds(idle_timeout, "--idle-timeout")?,
                },
                record_layer: tls_record_layer,
                path_normalization,
                trusted_proxies,
                limits: ConnectionLimits {
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    max_connections_per_client: max_connections_per_client.map(|n| n as usize),
                    http2_max_concurrent_streams,
                },
            };
            let admin = admin_address(&admin)?;
            control::run(RunOptions {
                shards,
                secrets_dir,
                steer_by_cpu,
                settings,
                admin,
                drain_timeout: seconds(drain_timeout, "--drain-timeout")?,
                jwks_refresh: seconds(jwks_refresh_interval, "--jwks-refresh-interval")?,
                watch: !no_watch,
                max_connections: max_connections.map(|n| n as usize),
                access_log,
                access_log_format,
                health,
                upgrade_socket,
                session_ticket_keys,
                ..RunOptions::new(config)
            })
        })(),
        Command::Check {
            config,
            secrets_dir,
            session_ticket_keys,
        } => control::check(
            &config,
            secrets_dir.as_deref(),
            session_ticket_keys.as_deref(),
        )
        .map(|description| {
            print!("{description}");
        }),
        Command::GenerateTicketKey => ringress::tls::generate_key_line()
            .map(|line| println!("{line}"))
            .map_err(anyhow::Error::from),
        Command::Demo {
            dir,
            http_port,
            https_port,
            shards,
            admin,
        } => admin_address(&admin).and_then(|admin| {
            demo::run(DemoOptions {
                dir,
                http_port,
                https_port,
                shards,
                admin,
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringress: error: {}", describe_error(&error));
            ExitCode::FAILURE
        }
    }
}

/// `--log-level`'s value, checked: every comma-separated directive must be a level,
/// or `target=level`. (tracing would read an unknown word such as `warning` as a
/// target name and turn every other log line off, errors included.)
fn log_filter(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    for directive in value.split(',') {
        let ok = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !ok {
            let hint = match directive.trim() {
                "warning" => " (did you mean warn?)",
                _ => "",
            };
            return Err(format!(
                "unknown log level {directive:?}{hint}: expected error, warn, info, debug, trace or off, or directives such as info,ringress::proxy=debug"
            ));
        }
    }
    Ok(value.to_owned())
}

/// `--admin`'s value: an address, or `off`.
fn admin_address(value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    match value {
        "off" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "--admin must be an address like 127.0.0.1:15000 or `off`, got {addr:?}"
            )
        }),
    }
}

/// A timeout flag's value as a duration: positive and finite.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    // A year at most: far beyond any useful timeout, far from overflowing a deadline.
    const MAX: Duration = Duration::from_secs(365 * 24 * 3600);
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{flag} must be a positive number of seconds, at most a year (31536000), got {value}"
            )
        })
}

/// An error and its causes on one line. Most of ringress's errors already name their
/// cause in their message, so a cause is added only when it is not already there.
fn describe_error(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_and_at_most_a_year() {
        assert_eq!(
            seconds(1.5, "--idle-timeout").unwrap(),
            Duration::from_millis(1500)
        );
        for bad in [0.0, -1.0, f64::NAN, 1e18, 31_536_001.0] {
            let error = seconds(bad, "--idle-timeout").unwrap_err().to_string();
            assert!(error.contains("at most a year"), "{bad}: {error}");
        }
    }

    #[test]
    fn log_levels_are_checked_word_by_word() {
        for good in [
            "info",
            "WARN",
            "off",
            "info,ringress::proxy=debug",
            "ringress=trace",
        ] {
            assert_eq!(log_filter(good).as_deref(), Ok(good));
        }
        for bad in ["warning", "verbose", "info,ringress=loud", "=debug", ""] {
            let error = log_filter(bad).unwrap_err();
            assert!(
                error.contains("expected error, warn, info"),
                "{bad}: {error}"
            );
        }
        assert!(
            log_filter("warning")
                .unwrap_err()
                .contains("did you mean warn?")
        );
    }
}
