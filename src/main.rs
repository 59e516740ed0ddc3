//! The `sluice` command line (README "Command line"). Exit codes: 0 ok, 1 runtime failure,
//! 2 bad usage or config.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-record allocations are most of the engine's remaining cost, and it is
/// markedly faster than the system allocator under two busy threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    sluice::logging::init(cli.log_format);
    match sluice::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.lines() {
                eprintln!("sluice: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
