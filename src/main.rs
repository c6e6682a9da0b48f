//! The `ferroturn` binary: parse the command line, run the subcommand, and
//! turn any failure into `error: ...` on stderr with exit status 1.

use std::error::Error;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ferroturn::cli::{CheckArgs, Cli, Command, ServeArgs};
use ferroturn::config::Config;

fn main() -> ExitCode {
    // Usage errors are reported by clap itself (exit status 2).
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
        Command::User(command) => Ok(ferroturn::commands::credentials::user(&command)?),
        Command::Secret(command) => Ok(ferroturn::commands::credentials::secret(&command)?),
        Command::Credential(command) => Ok(ferroturn::commands::credentials::credential(&command)?),
        Command::Sessions(command) => Ok(ferroturn::commands::control::sessions(&command)?),
        Command::Reload(args) => Ok(ferroturn::commands::control::reload(&args)?),
        Command::Drain(args) => Ok(ferroturn::commands::control::drain(&args)?),
        Command::ApiToken(command) => Ok(ferroturn::commands::api_token::run(&command)?),
        Command::Cluster(command) => Ok(ferroturn::commands::cluster::run(&command)?),
        Command::Bench(args) => ferroturn::bench::run(&args),
        Command::Import(ferroturn::cli::ImportCommand::Coturn(args)) => {
            Ok(ferroturn::commands::import_coturn::run(&args)?)
        }
        Command::Doctor(args) => match ferroturn::commands::doctor::run(&args)? {
            0 => Ok(()),
            failed => Err(format!("doctor: {failed} check(s) FAILED").into()),
        },
    }
}

fn serve(args: &ServeArgs) -> Result<(), Box<dyn Error>> {
    let config = args.build_config()?;
    ferroturn::logging::init(&config.log)?;
    // Names and counts only: this line ends up in log collectors.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %join(&config.listen),
        realm = %config.realm,
        threads = config.effective_threads(),
        relay_ips = %join(&config.relay.relay_ips),
        external_ips = %join(&config.relay.external_ips),
        relay_ports = %format_args!("{}-{}", config.relay.port_min, config.relay.port_max),
        users = config.auth.users.len(),
        secrets = config.auth.secrets.len(),
        peers_allowed = config.peers.allow.len(),
        peers_denied = config.peers.deny.len(),
        "ferroturn starting"
    );
    // SIGHUP and `ferroturn reload` read the file again with the same flags.
    let args = args.clone();
    ferroturn::ops::serve(config, move || args.build_config())?;
    tracing::info!("ferroturn stopped");
    Ok(())
}

fn check(args: &CheckArgs) -> Result<(), Box<dyn Error>> {
    let config = Config::load(&args.config)?;
    // An interface is a property of the host, not of the file: checked here,
    // not in `Config::load`, so a file can be validated on another machine
    // by `serve`'s own load (which falls back to userspace instead).
    if config.offload.enabled {
        for (i, name) in config.offload.interfaces.iter().enumerate() {
            if !ferroturn::offload::interface_exists(name) {
                return Err(format!(
                    "{}: offload.interfaces[{i}]: no network interface '{name}' on this host",
                    args.config.display()
                )
                .into());
            }
        }
    }
    // Written with `?` rather than println! so a closed stdout is an error,
    // not a panic.
    let mut out = std::io::stdout().lock();
    writeln!(out, "ok: {}", args.config.display())?;
    writeln!(out, "{}", config.summary())?;
    Ok(())
}

/// `[a, b, c]` for a log field, using `Display` rather than `Debug`.
fn join<T: std::fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}
