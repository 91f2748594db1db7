//! The `hitless doctor` command line: its flags, turning them into [`Options`] (a config file
//! loaded and validated as `hitless run` would, errors named by field), printing the report as
//! text or JSON, and the exit status: 0 no FAIL, 1 a FAIL, 64 a bad URL, flag value or config.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

use super::{Options, Target};

/// Exit status for a bad URL, flag value or config (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The endpoint to probe: http://, https://, h2c://, grpc:// or grpcs://HOST:PORT/PATH
    /// (the path is probed; for gRPC it names the health service). Compared against hitless's
    /// defaults for that protocol.
    #[arg(conflicts_with = "config")]
    pub url: Option<String>,
    /// Probe every endpoint of every backend of this config (discovered ones included),
    /// against each backend's settings.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// With --config: only this backend.
    #[arg(long, requires = "config")]
    pub backend: Option<String>,
    /// How long to hold an idle connection open, waiting for the endpoint to close it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_probe: Duration,
    /// Also check a WebSocket upgrade on this path.
    #[arg(long)]
    pub websocket: Option<String>,
    /// Print a JSON array of {backend, endpoint, check, verdict, found, fix}.
    #[arg(long)]
    pub json: bool,
    /// With a URL: the CA (PEM) that signs the endpoint's certificate (default: public roots).
    #[arg(long, conflicts_with = "config")]
    pub ca_file: Option<PathBuf>,
    /// With a URL: the name to send as SNI and verify (default: the URL's host).
    #[arg(long, conflicts_with = "config")]
    pub server_name: Option<String>,
}

/// The run's options, or the exit status to leave with (the reason printed).
pub fn options(args: &DoctorArgs) -> Result<Options, u8> {
    let target = match (&args.url, &args.config) {
        (Some(url), None) => Target::Url(url.clone()),
        (None, Some(path)) => match Config::load(path) {
            Ok(config) => Target::Config {
                config: Box::new(config),
                backend: args.backend.clone(),
            },
            Err(errors) => {
                eprintln!("hitless: invalid configuration ({}):", path.display());
                for e in &errors.0 {
                    eprintln!("  {e}");
                }
                return Err(EXIT_USAGE);
            }
        },
        _ => {
            eprintln!("hitless doctor: give a URL or --config FILE (see --help)");
            return Err(EXIT_USAGE);
        }
    };
    Ok(Options {
        target,
        idle_probe: args.idle_probe,
        websocket: args.websocket.clone(),
        ca_file: args.ca_file.clone(),
        server_name: args.server_name.clone(),
    })
}

/// Run the doctor as the command line asks; the exit status.
pub async fn main(args: DoctorArgs) -> u8 {
    let options = match options(&args) {
        Ok(options) => options,
        Err(code) => return code,
    };
    match super::run(options).await {
        Ok(report) => {
            print!(
                "{}",
                if args.json {
                    report.json()
                } else {
                    report.text()
                }
            );
            report.exit_code()
        }
        Err(e) => {
            eprintln!("hitless doctor: {e}");
            EXIT_USAGE
        }
    }
}
