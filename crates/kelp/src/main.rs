//! `kelp`: one binary for the whole cluster. This file only wires flags to
//! the library `run` functions of each daemon.

mod allocator;
mod args;
mod block_cli;
mod block_daemon;
mod block_snapshots;
mod cli;
mod daemon;
mod files_cli;
mod files_daemon;
mod logging;

use clap::Parser;

/// The block daemons run on one async thread: each request crosses a few
/// channels and sockets, and with one thread those hand-offs are plain
/// function calls instead of cross-thread wake-ups (on 2 cores this cut the
/// upstairs' CPU per 4 KiB write from ~36 to ~20 µs; disk IO already runs on
/// its own threads). The blob daemons serve many clients at once and use
/// every core.
fn runtime_for(command: &cli::Command) -> tokio::runtime::Builder {
    match command {
        cli::Command::Upstairs(_) | cli::Command::Downstairs(_) => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

fn main() -> std::process::ExitCode {
    allocator::configure();
    let cli = cli::Cli::parse_from(args::normalize(std::env::args_os()));
    logging::init(cli.log_level.as_deref());
    let runtime = match runtime_for(&cli.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kelp: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kelp: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
