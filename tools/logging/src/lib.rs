//! One logging setup for every Skiff host binary (`skiff-controlplane`,
//! `skiff-hollow-node`, `skiff`): `tracing` events go to stderr through one
//! subscriber, filtered by `--log-level` (or `RUST_LOG` when the flag is
//! absent; default `info`), as human-readable lines or, with
//! `--log-format json`, one JSON object per line. Long steps a person waits
//! for are a [`Progress`] (a spinner on a terminal, a line at each end
//! otherwise).
//!
//! ```no_run
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     log: skiff_logging::LogArgs,
//! }
//! let cli = <Cli as clap::Parser>::parse();
//! skiff_logging::init(&cli.log).expect("logging");
//! tracing::info!("started");
//! ```

mod progress;

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub use progress::Progress;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-05T12:00:00.123Z  INFO target: message key=value`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
}

/// The logging flags every binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// What to log: a level (error, warn, info, debug, trace) or
    /// `RUST_LOG` directives (`info,skiff_store=debug`). Default: `RUST_LOG`,
    /// else `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadySet,
}

impl LogArgs {
    fn filter(&self) -> Result<EnvFilter, Error> {
        let spec = self
            .log_level
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "info".into());
        EnvFilter::builder()
            .parse(&spec)
            .map_err(|e| Error::Filter {
                filter: spec,
                reason: e.to_string(),
            })
    }
}

/// Installs the process-wide subscriber writing to stderr.
pub fn init(args: &LogArgs) -> Result<(), Error> {
    install(args, std::io::stderr)
}

/// A subscriber writing into a shared buffer, for tests that assert what a
/// component logs. Returns the guard that keeps it current on this thread
/// and the buffer.
pub fn capture(args: &LogArgs) -> Result<(tracing::subscriber::DefaultGuard, Captured), Error> {
    let captured = Captured::default();
    let dispatch = dispatch(args, captured.clone())?;
    Ok((tracing::dispatcher::set_default(&dispatch), captured))
}

/// Log output kept in memory (see [`capture`]).
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn install<W>(args: &LogArgs, writer: W) -> Result<(), Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt as _;
    // `try_init` also routes the `log` facade (rustls, redb...) into tracing.
    let builder = builder(args, writer)?;
    match args.log_format {
        LogFormat::Text => builder.finish().try_init(),
        LogFormat::Json => builder.json().flatten_event(false).finish().try_init(),
    }
    .map_err(|_| Error::AlreadySet)
}

fn builder<W>(
    args: &LogArgs,
    writer: W,
) -> Result<
    tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        EnvFilter,
        W,
    >,
    Error,
>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    Ok(tracing_subscriber::fmt()
        .with_env_filter(args.filter()?)
        .with_writer(writer)
        .with_ansi(false))
}

fn dispatch<W>(args: &LogArgs, writer: W) -> Result<tracing::Dispatch, Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = builder(args, writer)?;
    Ok(match args.log_format {
        LogFormat::Text => builder.finish().into(),
        LogFormat::Json => builder.json().flatten_event(false).finish().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(level: &str, format: LogFormat) -> LogArgs {
        LogArgs {
            log_level: Some(level.into()),
            log_format: format,
        }
    }

    #[test]
    fn levels_are_honoured() {
        let (_g, out) = capture(&args("warn", LogFormat::Text)).unwrap();
        tracing::info!("quiet");
        tracing::warn!(node = "n1", "loud");
        let text = out.text();
        assert!(!text.contains("quiet"), "{text}");
        assert!(
            text.contains("WARN") && text.contains("loud") && text.contains("node=\"n1\""),
            "{text}"
        );
    }

    #[test]
    fn directives_pick_targets() {
        let (_g, out) = capture(&args("warn,skiff_logging=debug", LogFormat::Text)).unwrap();
        tracing::debug!("mine");
        tracing::debug!(target: "other", "theirs");
        let text = out.text();
        assert!(text.contains("mine") && !text.contains("theirs"), "{text}");
    }

    #[test]
    fn json_lines_parse() {
        let (_g, out) = capture(&args("info", LogFormat::Json)).unwrap();
        tracing::error!(code = 7, "it broke");
        let text = out.text();
        let line = text.lines().next().expect("one line");
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        assert!(line.contains(r#""level":"ERROR""#), "{line}");
        assert!(line.contains(r#""message":"it broke""#), "{line}");
        assert!(line.contains(r#""code":7"#), "{line}");
    }

    #[test]
    fn a_bad_filter_is_a_clear_error() {
        let err = args("info,=[", LogFormat::Text).filter().unwrap_err();
        assert!(matches!(err, Error::Filter { .. }), "{err}");
    }
}
