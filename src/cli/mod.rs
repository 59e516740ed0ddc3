//! Subcommands: `serve`, `check-config`, `enrich`.

mod cluster;
mod enrich;
mod inspect;
mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::engine::pipeline::Pipeline;
use crate::logging::LogFormat;
use crate::settings::{self, Settings};

/// sluice: asynchronous enrichment of JSON records, with Flink Async I/O guarantees.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: REST API, partitions, sinks.
    Serve {
        /// Config file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate and print the effective config (exit 2 with one line per problem).
    CheckConfig {
        /// Config file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Enrich an NDJSON file offline through the same engine and write envelopes.
    Enrich {
        /// Config file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// NDJSON input, `-` for stdin.
        #[arg(long, default_value = "-")]
        input: String,
        /// Where envelopes go, `-` for stdout.
        #[arg(long, default_value = "-")]
        output: String,
        /// Where dead letters go, `-` for stdout; default: `[dead_letter]` of the config.
        #[arg(long)]
        dead_letter: Option<String>,
        /// Never draw a progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Cluster commands (read from etcd).
    Cluster {
        #[command(subcommand)]
        action: ClusterCommand,
    },
    /// Show what a checkpoint directory holds: snapshots, segments, pending records, damage.
    Inspect {
        /// The directory (`checkpoint.dir`).
        #[arg(long)]
        checkpoint_dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `sluice cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the members and partition owners (with epochs) of the cluster `[cluster]`
    /// names, as JSON.
    Status {
        /// Config file layered over the built-in defaults (its `[cluster]` names etcd).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// A failed command: what to print and which exit code to use.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or config: exit 2.
    #[error("{}", .0.join("\n"))]
    Usage(Vec<String>),
    /// Anything that went wrong while running: exit 1.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }

    /// The message, one line per problem.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

impl From<settings::LoadError> for CliError {
    fn from(e: settings::LoadError) -> Self {
        CliError::Usage(e.problems)
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Inspect {
            checkpoint_dir,
            json,
        } => inspect::run(&checkpoint_dir, json),
        Command::Cluster {
            action: ClusterCommand::Status { config },
        } => cluster::status(settings::load(config.as_deref())?),
        Command::Serve { config } => serve::run(checked_settings(config.as_deref())?),
        Command::CheckConfig { config } => {
            let s = checked_settings(config.as_deref())?;
            print!("{}", s.to_toml());
            Ok(())
        }
        Command::Enrich {
            config,
            input,
            output,
            dead_letter,
            no_progress,
        } => enrich::run(
            settings::load(config.as_deref())?,
            enrich::Options {
                input,
                output,
                dead_letter,
                progress: !no_progress,
            },
        ),
    }
}

/// The one validation `serve` and `check-config` both run, so a config `check-config`
/// passes is one `serve` starts with: layers, keys, types and enum names
/// ([`settings::parse`]), then every value check ([`settings::validate`]: ranges, pointers,
/// the checkpoint directory and the sinks' files), then what building the lookup would
/// refuse ([`crate::lookup::factory::check`]: the memory table is loaded; nothing is
/// connected to). Every problem comes back, one line each, naming the key (exit 2).
pub fn checked_settings(path: Option<&Path>) -> Result<Settings, CliError> {
    let s = settings::parse(path)?;
    let mut problems = settings::validate(&s);
    // Loading the table would report a missing file, an empty key column or a bad pointer
    // again: it is loaded when those are fine.
    let reported = ["table", "key_column", "delay_field", "fail_field"]
        .iter()
        .any(|k| {
            problems
                .iter()
                .any(|p| p.starts_with(&format!("lookup.memory.{k}:")))
        });
    if !reported {
        problems.extend(crate::lookup::factory::check(&s));
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(CliError::Usage(problems))
    }
}

/// Build the configured pipeline: one lookup backend per step (see
/// [`crate::lookup::factory::build_pipeline`]).
pub fn build_pipeline(settings: &Settings) -> Result<Arc<Pipeline>, CliError> {
    let lookups = crate::lookup::factory::build_pipeline(settings)?;
    Pipeline::new(settings, lookups)
        .map(Arc::new)
        .map_err(|e| CliError::Usage(vec![e.to_string()]))
}

impl From<crate::lookup::factory::BuildError> for CliError {
    fn from(e: crate::lookup::factory::BuildError) -> Self {
        match e {
            crate::lookup::factory::BuildError::Config(m) => CliError::Usage(vec![m]),
            crate::lookup::factory::BuildError::Connect(m) => CliError::Runtime(m),
        }
    }
}
