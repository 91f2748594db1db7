//! Command-line interface: parse arguments, then load and validate configuration before any
//! port is bound. Exit codes: 0 ok, 1 runtime failure (port taken...), 64 invalid usage or config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{effective_yaml, Config, ConfigErrors, SidecarOptions};

/// Exit code for an invalid configuration or flags (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "hitless",
    version,
    about = "A reverse proxy for Kubernetes that removes 502 Bad Gateway errors in code",
    long_about = "hitless sits in front of your app (as a sidecar) or your services (as a gateway) \
and keeps deploys, crashes, slow starts and idle keep-alive connections from reaching users as \
502s. Every error it cannot avoid says why, in a Proxy-Status header, the access log and metrics."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run as a gateway from a YAML config file.
    Run {
        /// Path to the config file (see examples/).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run as a sidecar in front of one app, configured by flags only.
    Sidecar {
        /// Address to accept client traffic on.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// The app's address, host:port (usually 127.0.0.1:PORT).
        #[arg(long)]
        upstream: String,
        /// What the app speaks: http (HTTP/1.1), h2c (HTTP/2 without TLS), grpc, https or grpcs.
        #[arg(long, default_value = "http")]
        upstream_protocol: String,
        /// For https/grpcs: the CA (PEM) that signs the app's certificate (default: public roots).
        #[arg(long)]
        upstream_ca_file: Option<String>,
        /// For https/grpcs: the name to send as SNI and verify.
        #[arg(long)]
        upstream_server_name: Option<String>,
        /// Admin address for /healthz, /readyz and /metrics.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Do not write the access log to stdout.
        #[arg(long)]
        no_access_log: bool,
        /// Serve on this long after readiness turns off (endpoint removal propagating).
        #[arg(long, default_value = "5s")]
        drain_delay: String,
        /// Then wait at most this long for in-flight requests.
        #[arg(long, default_value = "20s")]
        drain_timeout: String,
        /// Unix socket that `hitless drain` talks to.
        #[arg(long, default_value = "/tmp/hitless.sock")]
        control_socket: String,
    },
    /// Validate a config file, print it with defaults filled in, and warn where the timeout
    /// chain is inverted or a route can never match.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Exit non-zero when there are warnings, too.
        #[arg(long)]
        strict: bool,
    },
    /// Ask the running hitless to drain (for a Kubernetes preStop exec hook: no shell needed).
    /// Returns once its drain delay is over, so the SIGTERM that follows does not wait again.
    Drain {
        /// The control socket of the instance (its `drain.control_socket`).
        #[arg(long, default_value = "/tmp/hitless.sock")]
        socket: PathBuf,
    },
    /// Show the 502s of a rolling restart, a slow start, a crash and the keep-alive race
    /// through a plain proxy and through hitless, with real servers on loopback at production
    /// load (about 90 s, needs nothing).
    Demo,
    /// Check Kubernetes manifests for what causes 502s: readiness probes, preStop hooks,
    /// grace periods against drains, ingress-nginx annotations, HTTPRoute timeouts.
    /// Exit 0: no errors (warnings allowed); 1: errors; 64: an input could not be read.
    Lint {
        /// Files or folders of YAML (folders are searched for *.yaml / *.yml); `-` reads
        /// the standard input (e.g. `kubectl kustomize . | hitless lint -`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `text` for people, `json` for tools.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Controller mode: serve as `run` does, with routes and backends from the cluster's
    /// Ingress objects of an IngressClass (translated as `import` does, ingress-nginx
    /// annotations included), swapped in at each change. The file gives listeners, admin,
    /// defaults and routes of its own (tried after the cluster's); it is read at start.
    Ingress {
        #[arg(long, short)]
        config: PathBuf,
        /// The IngressClass name (its `spec.controller`: hitless.dev/ingress).
        #[arg(long, default_value = "hitless")]
        class: String,
        /// Watch one namespace (default: all).
        #[arg(long)]
        namespace: Option<String>,
        /// A kubeconfig file (default: in-cluster service account, then $KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The address clients reach hitless at (IP or host name): written into the status
        /// of each Ingress and Gateway applied, so `kubectl get ingress` shows it.
        #[arg(long)]
        publish_address: Option<String>,
        /// Where TLS Secrets are written as certificate files for the TLS listeners (the
        /// controller's own folder; default: hitless-secrets in the temporary folder).
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
        /// The namespace of the leader-election Lease (default: $POD_NAMESPACE, then
        /// --namespace, then `default`). Only the leader writes statuses and Events.
        #[arg(long)]
        lease_namespace: Option<String>,
        /// How long a leader's Lease lasts without renewal (renewed every third of it).
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        lease_duration: std::time::Duration,
    },
    /// Convert Ingress objects (with ingress-nginx annotations) and Gateway API HTTPRoutes
    /// into a hitless config file, with a report of what maps, what maps differently and
    /// what does not. The config goes to stdout (or --output), the report to stderr. Exit 0:
    /// imported; 1: something was refused (raw nginx snippets) or nothing found; 64: an input
    /// could not be read.
    Import {
        /// Files or folders of YAML; `-` reads the standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the config here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Probe a backend's endpoints for what causes 502s: refused or black-holed connects, the
    /// protocol spoken, TLS certificates, the health path, the measured keep-alive against the
    /// pool, connection reuse, response head size, WebSocket upgrades. One line per check with
    /// the setting that fixes it. Exit 0: nothing fails; 1: a finding would cause 502s; 64: a
    /// bad URL or config.
    Doctor(crate::doctor::DoctorArgs),
}

fn report(errors: &ConfigErrors, source: &str) -> ExitCode {
    eprintln!("hitless: invalid configuration ({source}):");
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// Load the config a command names (`None` for commands without one), or the exit code to
/// leave with.
pub fn load(command: &Command) -> Result<Option<Config>, ExitCode> {
    let config = match command {
        Command::Demo
        | Command::Drain { .. }
        | Command::Lint { .. }
        | Command::Import { .. }
        | Command::Doctor(_) => return Ok(None),
        Command::Run { config }
        | Command::Check { config, .. }
        | Command::Ingress { config, .. } => {
            Config::load(config).map_err(|e| report(&e, &config.display().to_string()))
        }
        Command::Sidecar {
            listen,
            upstream,
            upstream_protocol,
            upstream_ca_file,
            upstream_server_name,
            admin,
            no_access_log,
            drain_delay,
            drain_timeout,
            control_socket,
        } => Config::sidecar(
            listen,
            upstream,
            Some(admin),
            &SidecarOptions {
                delay: drain_delay.clone(),
                timeout: drain_timeout.clone(),
                control_socket: control_socket.clone(),
                protocol: upstream_protocol.clone(),
                ca_file: upstream_ca_file.clone(),
                server_name: upstream_server_name.clone(),
            },
        )
        .map(|mut c| {
            c.access_log = !no_access_log;
            c
        })
        .map_err(|e| report(&e, "flags")),
    };
    config.map(Some)
}

/// `hitless check`: print the effective config and the warnings.
pub fn check(config: &Config, strict: bool) -> ExitCode {
    print!("{}", effective_yaml(config));
    let warnings = config.warnings();
    for w in &warnings {
        eprintln!("{w}");
    }
    if warnings.is_empty() {
        eprintln!("ok: configuration is valid, timeout chain holds");
        ExitCode::SUCCESS
    } else if strict {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The standard input's text when one of `paths` is `-`.
fn stdin_for(paths: &[PathBuf], command: &str) -> Result<Option<String>, ExitCode> {
    use std::io::Read;
    if !paths.iter().any(|p| p.as_os_str() == "-") {
        return Ok(None);
    }
    let mut text = String::new();
    match std::io::stdin().read_to_string(&mut text) {
        Ok(_) => Ok(Some(text)),
        Err(e) => {
            eprintln!("hitless {command}: cannot read the standard input: {e}");
            Err(ExitCode::from(crate::lint::LintError::EXIT_CODE))
        }
    }
}

/// `hitless import`: the config on stdout (or `output`), the report on stderr.
pub fn import(paths: &[PathBuf], output: Option<&std::path::Path>) -> ExitCode {
    let stdin = match stdin_for(paths, "import") {
        Ok(stdin) => stdin,
        Err(code) => return code,
    };
    let import = match crate::ingress::import_paths(paths, stdin.as_deref()) {
        Ok(import) => import,
        Err(e) => {
            eprintln!("hitless import: {e}");
            return ExitCode::from(crate::lint::LintError::EXIT_CODE);
        }
    };
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &import.config) {
                eprintln!("hitless import: cannot write {}: {e}", path.display());
                return ExitCode::from(crate::lint::LintError::EXIT_CODE);
            }
        }
        None => print!("{}", import.config),
    }
    eprint!("{}", import.render_report());
    ExitCode::from(import.exit_code())
}

/// `hitless lint`: report findings on stdout; the exit code says whether any is an error.
pub fn lint(paths: &[PathBuf], format: &str) -> ExitCode {
    let stdin = match stdin_for(paths, "lint") {
        Ok(stdin) => stdin,
        Err(code) => return code,
    };
    let format = if format == "json" {
        crate::lint::Format::Json
    } else {
        crate::lint::Format::Text
    };
    match crate::lint::lint_paths(paths, stdin.as_deref()) {
        Ok(findings) => {
            print!("{}", crate::lint::render(&findings, format));
            ExitCode::from(crate::lint::exit_code(&findings))
        }
        Err(e) => {
            eprintln!("hitless lint: {e}");
            ExitCode::from(crate::lint::LintError::EXIT_CODE)
        }
    }
}
