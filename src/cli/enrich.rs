//! `sluice enrich`: NDJSON in, envelopes out, through the same engine as the service (same
//! modes, capacity, retries, lookups). A reader thread parses and validates lines in
//! batches; the engine's backlog bound is the backpressure (a refused batch waits and is
//! offered again). Lines that are not valid records are reported on stderr with their line
//! number and counted; everything else still runs, and the exit code is 1 if any line was
//! rejected.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{CliError, build_pipeline};
use crate::engine::admit::{Admitted, RecordRules};
use crate::engine::outcome::OutcomeKind;
use crate::engine::{Engine, SubmitError};
use crate::settings::Settings;
use crate::sink::file::FileSink;
use crate::sink::stdout::StdoutSink;
use crate::sink::{self, Sink};

const BATCH: usize = 1024;
const SHOWN_REJECTS: usize = 20;

/// Command-line options of `sluice enrich`.
pub struct Options {
    pub input: String,
    pub output: String,
    pub dead_letter: Option<String>,
    pub progress: bool,
}

struct Parsed {
    records: Vec<Admitted>,
    rejected: u64,
}

/// `-` is stdout; a file is written afresh (a backfill's output is its own file).
fn open_sink(target: &str) -> Result<Box<dyn Sink>, CliError> {
    if target == "-" {
        Ok(Box::new(StdoutSink::new()))
    } else {
        FileSink::create(target)
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .map_err(|e| CliError::Runtime(e.to_string()))
    }
}

/// Run the offline enrichment.
pub fn run(settings: Settings, opts: Options) -> Result<(), CliError> {
    let pipeline = build_pipeline(&settings)?;
    let input: Box<dyn Read + Send> = if opts.input == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&opts.input).map_err(|e| {
            CliError::Usage(vec![format!("--input: cannot open `{}`: {e}", opts.input)])
        })?)
    };
    let output = open_sink(&opts.output)?;
    let dead = match &opts.dead_letter {
        Some(t) => open_sink(t)?,
        None => sink::open(&settings.dead_letter, sink::Role::DeadLetter)
            .map_err(|e| CliError::Runtime(e.to_string()))?,
    };
    let rules = RecordRules::from_settings(&settings)
        .map_err(|e| CliError::Usage(vec![e.to_string()]))?
        .with_pipeline(pipeline.clone());

    // A batch bigger than what one partition may hold could never be admitted.
    let batch = BATCH.min((settings.pipeline.capacity + settings.pipeline.backlog) as usize);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Parsed>(8);
    let reader = std::thread::Builder::new()
        .name("sluice-reader".into())
        .spawn(move || read_input(input, rules, batch, tx))
        .map_err(|e| CliError::Runtime(format!("cannot start reader: {e}")))?;

    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {human_pos} records emitted  {msg}  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(100));
        Some(b)
    } else {
        None
    };

    let started = Instant::now();
    let system = actix_rt::System::new();
    let summary = system.block_on(async move {
        // Offline runs are not journaled: rerunning the command is their recovery.
        let engine = Engine::start(&settings, pipeline, output, dead, None)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        engine.set_ready();
        let mut accepted = 0u64;
        let mut rejected = 0u64;
        while let Some(mut parsed) = rx.recv().await {
            rejected += parsed.rejected;
            let n = parsed.records.len() as u64;
            loop {
                show(&bar, &engine, started);
                match engine.submit(std::mem::take(&mut parsed.records)).await {
                    Ok(_) => break,
                    Err(SubmitError::Overloaded { records, .. }) => {
                        // Nothing was taken: offer the batch again once partitions drained a bit.
                        parsed.records = records;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(
                        e @ (SubmitError::Stopped
                        | SubmitError::Journal(_)
                        | SubmitError::Unavailable(_)),
                    ) => {
                        return Err(CliError::Runtime(e.to_string()));
                    }
                }
            }
            accepted += n;
        }
        while !engine.drain(Duration::from_millis(100)).await {
            show(&bar, &engine, started);
        }
        engine
            .flush()
            .await
            .map_err(|e| CliError::Runtime(format!("flush failed: {e}")))?;
        show(&bar, &engine, started);
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let m = &engine.shared().metrics;
        let outcomes: Vec<(OutcomeKind, u64)> = OutcomeKind::ALL
            .iter()
            .map(|k| (*k, m.records_emitted.with_label_values(&[k.as_str()]).get()))
            .collect();
        let dead_letters = m.dead_letters.get();
        engine.stop();
        Ok::<_, CliError>((accepted, rejected, outcomes, dead_letters))
    })?;
    let _ = reader.join();
    let (accepted, rejected, outcomes, dead_letters) = summary;
    let secs = started.elapsed().as_secs_f64();
    let per = outcomes
        .iter()
        .map(|(k, n)| format!("{} {n}", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "sluice enrich: {accepted} records in {secs:.2} s ({:.0} records/s); {per}; \
         {dead_letters} dead letters; {rejected} rejected input lines",
        accepted as f64 / secs.max(1e-9)
    );
    if rejected > 0 {
        return Err(CliError::Runtime(format!(
            "{rejected} input line(s) were not valid records (see above)"
        )));
    }
    Ok(())
}

fn show(bar: &Option<ProgressBar>, engine: &Engine, started: Instant) {
    if let Some(b) = bar {
        let n = emitted(engine);
        b.set_position(n);
        b.set_message(format!(
            "{:.0} records/s",
            n as f64 / started.elapsed().as_secs_f64().max(1e-3)
        ));
    }
}

fn emitted(engine: &Engine) -> u64 {
    engine
        .shared()
        .partitions
        .iter()
        .map(|p| p.emitted.load(std::sync::atomic::Ordering::Acquire))
        .sum()
}

fn read_input(
    input: Box<dyn Read + Send>,
    rules: RecordRules,
    batch_size: usize,
    tx: tokio::sync::mpsc::Sender<Parsed>,
) {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut batch = Parsed {
        records: Vec::with_capacity(batch_size),
        rejected: 0,
    };
    let mut shown = 0usize;
    let mut index = 0usize;
    let mut line = String::new();
    let mut line_no = 0usize;
    loop {
        line.clear();
        line_no += 1;
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("sluice enrich: line {line_no}: cannot read input: {e}");
                batch.rejected += 1;
                break;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        match rules.admit(index, &line) {
            Ok(a) => {
                index += 1;
                batch.records.push(a);
            }
            Err(errors) => {
                if shown < SHOWN_REJECTS {
                    let msg = errors
                        .iter()
                        .map(|e| {
                            if e.pointer.is_empty() {
                                e.message.clone()
                            } else {
                                format!("{}: {}", e.pointer, e.message)
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    eprintln!("sluice enrich: line {line_no}: {msg}");
                } else if shown == SHOWN_REJECTS {
                    eprintln!(
                        "sluice enrich: more rejected lines follow; only the count is reported"
                    );
                }
                shown += 1;
                batch.rejected += 1;
            }
        }
        if batch.records.len() >= batch_size {
            let full = std::mem::replace(
                &mut batch,
                Parsed {
                    records: Vec::with_capacity(batch_size),
                    rejected: 0,
                },
            );
            if tx.blocking_send(full).is_err() {
                return;
            }
        }
    }
    if !batch.records.is_empty() || batch.rejected > 0 {
        let _ = tx.blocking_send(batch);
    }
}
