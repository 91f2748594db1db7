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
    let cli = Cli::parse();
    let config = match cli::load(&cli.command) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return match &cli.command {
                Command::Drain { socket } => drain(socket),
                _ => demo(),
            }
        }
        Err(code) => return code,
    };
    let source = match &cli.command {
        Command::Run { config } => Some(config.clone()),
        _ => None,
    };
    if let Command::Check { strict, .. } = cli.command {
        return cli::check(&config, strict);
    }

    let _log_guard = hitless::runtime::telemetry::init();
    // The main runtime runs admin, signals and the pool reaper; traffic is served by the
    // worker threads that `app::run` starts (one single-threaded runtime each).
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hitless: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(hitless::app::run(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hitless: {e}");
            ExitCode::from(1)
        }
    }
}

/// `hitless demo`: everything in this process, on one runtime.
fn demo() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hitless: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(hitless::demo::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hitless demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// `hitless drain`: ask the running instance to drain; print its answer.
fn drain(socket: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hitless: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(hitless::runtime::drain::request(socket)) {
        Ok(reply) => {
            print!("{reply}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hitless drain: {e}");
            ExitCode::from(1)
        }
    }
}
