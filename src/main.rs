//! The `sluice` command line (README "Command line"). Exit codes: 0 ok, 1 runtime failure,
//! 2 bad usage or config. Nothing here panics on a stderr that cannot be written (a full
//! disk): log lines and the error message go through `sluice::logging`.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-record allocations are most of the engine's remaining cost, and it is
/// markedly faster than the system allocator under two busy threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    sluice::logging::init(cli.log_format);
    let code = match sluice::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text: String = e
                .lines()
                .iter()
                .map(|line| format!("sluice: {line}\n"))
                .collect();
            sluice::logging::print_stderr(&text);
            ExitCode::from(e.exit_code())
        }
    };
    // The last log lines are written before the process ends.
    sluice::logging::flush(std::time::Duration::from_secs(1));
    code
}
