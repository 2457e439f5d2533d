//! `kelp`: one binary for the whole cluster. This file only wires flags to
//! the library `run` functions of each daemon.

mod args;
mod block_cli;
mod block_daemon;
mod cli;
mod daemon;
mod logging;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse_from(args::normalize(std::env::args_os()));
    logging::init(cli.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
