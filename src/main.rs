//! `hitless` binary: parse flags, load and validate config (exit 64 on error, before binding
//! anything), then run.

use std::process::ExitCode;

// mimalloc: a proxy allocates and frees small objects (header maps, buffers, futures) on every
// request; glibc's malloc spent ~6% of the instructions per proxied request (callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use hitless::cli::{self, Cli, Command};

fn main() -> ExitCode {
    // One TLS provider for every rustls user in the process, ours and kube-rs's (whose client
    // asks for the process default): ring, the only one compiled in. An error means one is
    // installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let config = match cli::load(&cli.command) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return match &cli.command {
                Command::Drain { socket } => drain(socket),
                Command::Lint { paths, format } => cli::lint(paths, format),
                Command::Import { paths, output } => cli::import(paths, output.as_deref()),
                Command::Doctor(args) => doctor(args.clone()),
                _ => demo(),
            }
        }
        Err(code) => return code,
    };
    let source = match &cli.command {
        Command::Run { config } => Some(config.clone()),
        _ => None,
    };
    // Controller mode: the file is the base the cluster's routes are merged into, read once.
    let controller = match &cli.command {
        Command::Ingress {
            config: path,
            class,
            namespace,
            kubeconfig,
            publish_address,
            secrets_dir,
            lease_namespace,
            lease_duration,
        } => match std::fs::read_to_string(path) {
            Ok(base) => Some(hitless::ingress::controller::Controller {
                class: class.clone(),
                namespace: namespace.clone(),
                kubeconfig: kubeconfig.clone(),
                base,
                publish_address: publish_address.clone(),
                secrets_dir: secrets_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("hitless-secrets")),
                lease: hitless::ingress::controller::LeaseSettings {
                    namespace: lease_namespace
                        .clone()
                        .or_else(|| std::env::var("POD_NAMESPACE").ok())
                        .or_else(|| namespace.clone())
                        .unwrap_or_else(|| "default".into()),
                    name: format!("hitless-ingress-{class}"),
                    duration: (*lease_duration).max(std::time::Duration::from_secs(1)),
                },
            }),
            Err(e) => {
                eprintln!("hitless ingress: cannot read {}: {e}", path.display());
                return ExitCode::from(64);
            }
        },
        _ => None,
    };
    if let Command::Check { strict, .. } = cli.command {
        return cli::check(&config, strict);
    }

    let _log_guard = hitless::runtime::telemetry::init();
    // The main runtime runs admin, signals and the pool reaper; traffic is served by the
    // worker threads that `app::run` starts (one single-threaded runtime each).
    block_on(
        "hitless",
        tokio::runtime::Builder::new_current_thread(),
        hitless::app::run(config, source, controller),
    )
}

/// `hitless demo`: upstreams, hitless and clients in this process, on one runtime.
fn demo() -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    block_on("hitless demo", builder, hitless::demo::run())
}

/// `hitless doctor`: probes on a small runtime; the report's exit status.
fn doctor(args: hitless::doctor::DoctorArgs) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    match builder.enable_all().build() {
        Ok(runtime) => ExitCode::from(runtime.block_on(hitless::doctor::command::main(args))),
        Err(e) => {
            eprintln!("hitless doctor: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// `hitless drain`: ask the running instance to drain; print its answer.
fn drain(socket: &std::path::Path) -> ExitCode {
    let asked = async {
        let reply = hitless::runtime::drain::request(socket).await?;
        print!("{reply}");
        Ok::<_, std::io::Error>(())
    };
    block_on(
        "hitless drain",
        tokio::runtime::Builder::new_current_thread(),
        asked,
    )
}

/// Run `work` to completion on a runtime from `builder`: exit 0, or 1 with the error.
fn block_on<E: std::fmt::Display>(
    what: &str,
    mut builder: tokio::runtime::Builder,
    work: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::from(1)
        }
    }
}
