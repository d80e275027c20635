//! Argument parsing and dispatch. Every command prints a human-readable
//! table by default and JSON with `--json`; errors go to stderr with a
//! non-zero exit code.

mod demo;
mod http;
mod ingest;
mod lifecycle;
mod output;
mod read;
mod serve;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use span_sessions::{Durability, SessionSort, SessionStore, StoreOptions};

/// Embedded storage for LLM-tracing spans grouped into sessions.
#[derive(Debug, Parser)]
#[command(name = "span-sessions", version, about, max_term_width = 100)]
struct Cli {
    /// The store directory.
    #[arg(
        long,
        global = true,
        env = "SPAN_SESSIONS_DIR",
        default_value = "./span-sessions-data",
        value_name = "DIR"
    )]
    store: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store OTLP trace requests from files or directories: `.pb`/`.binpb`
    /// (protobuf), `.json` (one OTLP/JSON request), `.jsonl` (one per line).
    Ingest {
        /// Files, or directories searched recursively for those extensions.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// File every span under this project, whatever its resource says.
        #[arg(long, value_name = "P")]
        project: Option<String>,
        /// Largest request accepted (a file, or one line of a `.jsonl` file).
        #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
        max_request_bytes: u64,
    },
    /// List the projects.
    Projects,
    /// List a project's sessions.
    Sessions {
        /// The project.
        #[arg(long, value_name = "P")]
        project: String,
        /// Sort key.
        #[arg(long, value_enum, default_value_t = SortKey::Start)]
        sort: SortKey,
        /// Smallest first.
        #[arg(long, conflicts_with = "desc")]
        asc: bool,
        /// Largest first (the default).
        #[arg(long)]
        desc: bool,
        /// Only sessions whose root inputs or outputs contain TEXT
        /// (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long, value_name = "C")]
        cursor: Option<String>,
    },
    /// Show a session's turns, oldest first.
    History {
        /// The project.
        #[arg(long, value_name = "P")]
        project: String,
        /// The session id.
        #[arg(long, value_name = "S")]
        session: String,
        /// Page size.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long, value_name = "C")]
        cursor: Option<String>,
    },
    /// Show every span of a trace.
    Trace {
        /// The trace id, 32 hex digits.
        trace_id: String,
    },
    /// Counts per project and the store's size on disk.
    Stats,
    /// Check that the indexes agree with the stored spans.
    Verify,
    /// Repair a damaged store: keep every intact log frame, drop the
    /// damaged ranges (the original log is kept beside the new one as
    /// `log.before-salvage`), rebuild the indexes from the log, and verify.
    Repair,
    /// Ingest realistic demo sessions into the store and print them.
    Demo,
    /// Delete a session (--project P --session S), a trace (--trace ID), a
    /// whole project (--project P) or every session of a user (--user U).
    #[command(group(clap::ArgGroup::new("what").required(true).args(["project", "trace", "user"])))]
    Delete {
        /// The project (with --session: one of its sessions).
        #[arg(long, value_name = "P", conflicts_with_all = ["trace", "user"])]
        project: Option<String>,
        /// The session to delete (needs --project).
        #[arg(long, value_name = "S", requires = "project")]
        session: Option<String>,
        /// The trace to delete, 32 hex digits.
        #[arg(long, value_name = "ID", conflicts_with = "user")]
        trace: Option<String>,
        /// Delete every session whose user id is U, in every project.
        #[arg(long, value_name = "U")]
        user: Option<String>,
    },
    /// Delete old sessions whole: those whose last activity is older than
    /// --max-age (30d, 12h, 90m, 45s, 2w), or all but the newest
    /// --max-sessions per project.
    #[command(group(clap::ArgGroup::new("policy").required(true).multiple(true).args(["max_age", "max_sessions"])))]
    Retain {
        /// Only this project (default: every project).
        #[arg(long, value_name = "P")]
        project: Option<String>,
        /// Keep sessions active within this age.
        #[arg(long, value_name = "AGE")]
        max_age: Option<String>,
        /// Keep at most this many sessions per project (newest last activity).
        #[arg(long, value_name = "N")]
        max_sessions: Option<u64>,
    },
    /// Reclaim the space of deleted data: rewrite mostly dead log segments
    /// and compact the index file.
    Compact,
    /// Receive OTLP/HTTP (`POST /v1/traces`, protobuf or JSON, gzip or not)
    /// into the store.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:4318", value_name = "ADDR")]
        listen: String,
        /// File every span under this project, whatever its resource says.
        #[arg(long, value_name = "P")]
        project: Option<String>,
        /// Largest request body accepted, before and after gzip decompression.
        #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
        max_body_bytes: u64,
        /// Request bodies held at once, read but not yet answered (at least
        /// --max-body-bytes); a body that would pass it is answered 503.
        #[arg(long, default_value_t = DEFAULT_MAX_BUFFERED_BYTES, value_name = "BYTES")]
        max_buffered_bytes: u64,
        /// Requests decoded and stored at once (each connection is read on
        /// a thread of its own, up to 256 connections).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
    },
}

/// Largest OTLP request accepted by default (the OpenTelemetry Collector's
/// default limit for OTLP/HTTP bodies is 20 MiB).
const DEFAULT_MAX_REQUEST_BYTES: u64 = 20 << 20;

/// Request bodies `serve` holds at once by default: a dozen of the largest
/// bodies it accepts, where 256 connections could otherwise hold 5 GiB.
const DEFAULT_MAX_BUFFERED_BYTES: u64 = 256 << 20;

/// Session list sort keys, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SortKey {
    /// Start of the earliest trace.
    Start,
    /// End of the latest trace (last activity).
    End,
    /// Number of traces.
    Traces,
    /// Total tokens.
    Tokens,
    /// End minus start.
    Duration,
}

impl From<SortKey> for SessionSort {
    fn from(k: SortKey) -> Self {
        match k {
            SortKey::Start => SessionSort::StartTime,
            SortKey::End => SessionSort::EndTime,
            SortKey::Traces => SessionSort::NumTraces,
            SortKey::Tokens => SessionSort::TotalTokens,
            SortKey::Duration => SessionSort::Duration,
        }
    }
}

/// A command's failure: printed to stderr, exit code 1.
#[derive(Debug)]
pub(crate) struct CliError(String);

/// The message of a write to a closed pipe (`span-sessions ... | head`),
/// which ends the command quietly.
const BROKEN_PIPE: &str = "";

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<span_sessions::Error> for CliError {
    fn from(e: span_sessions::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError(s)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError(BROKEN_PIPE.to_owned())
        } else {
            CliError(format!("writing output: {e}"))
        }
    }
}

pub(crate) type CliResult<T = ()> = Result<T, CliError>;

/// Parses the arguments, runs the command and maps the outcome to an exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.0 != BROKEN_PIPE {
                let _ = writeln!(std::io::stderr(), "span-sessions: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn open(dir: &std::path::Path) -> CliResult<SessionStore> {
    open_with(dir, SessionStore::options())
}

/// [`open`] with `options`.
fn open_with(dir: &std::path::Path, options: StoreOptions) -> CliResult<SessionStore> {
    options.open(dir).map_err(|e| {
        if e.kind() == span_sessions::ErrorKind::Corrupted {
            CliError(format!(
                "opening store {}: {e}; {}",
                dir.display(),
                read::REPAIR_HINT
            ))
        } else {
            CliError(format!("opening store {}: {e}", dir.display()))
        }
    })
}

/// Opens the store in `dir` for a command that reads or changes what it
/// holds: one that is not there is an error, and nothing is created (a
/// mistyped `--store` would otherwise answer with an empty store, and leave
/// one behind). `ingest`, `serve` and `demo` create the store.
fn open_existing(dir: &std::path::Path) -> CliResult<SessionStore> {
    require_store(dir)?;
    open(dir)
}

/// An error unless `dir` holds a store.
fn require_store(dir: &std::path::Path) -> CliResult {
    // What every store holds from its first open on (docs/FORMAT.md): the
    // index file and the log's directory. Either one is enough: a store
    // whose index is lost rebuilds it from the log.
    if !dir.join("index.redb").exists() && !dir.join("log").is_dir() {
        return Err(CliError(format!(
            "no store at {}: `ingest`, `serve` or `demo` creates one (set --store or SPAN_SESSIONS_DIR to use another)",
            dir.display()
        )));
    }
    Ok(())
}

fn run(cli: Cli) -> CliResult {
    let json = cli.json;
    match cli.command {
        Command::Ingest {
            paths,
            project,
            max_request_bytes,
        } => {
            // Not an fsync per request: the run syncs once at its end,
            // before it reports, and a run cut short is safely run again
            // (appends are idempotent).
            let options = SessionStore::options().durability(Durability::Buffered);
            // The paths are looked up first: a bad one leaves no new store.
            let open = || open_with(&cli.store, options);
            ingest::run(open, &paths, project, max_request_bytes, json)
        }
        Command::Projects => read::projects(&open_existing(&cli.store)?, json),
        Command::Sessions {
            project,
            sort,
            asc,
            desc: _,
            search,
            limit,
            cursor,
        } => {
            let query = read::SessionsArgs {
                project,
                sort: sort.into(),
                descending: !asc,
                search,
                limit: limit as usize,
                cursor,
            };
            read::sessions(&open_existing(&cli.store)?, &query, json)
        }
        Command::History {
            project,
            session,
            limit,
            cursor,
        } => read::history(
            &open_existing(&cli.store)?,
            &project,
            &session,
            limit as usize,
            cursor.as_deref(),
            json,
        ),
        Command::Trace { trace_id } => {
            let id = trace_id
                .parse()
                .map_err(|e| CliError(format!("bad trace id {trace_id:?}: {e}")))?;
            read::trace(&open_existing(&cli.store)?, id, json)
        }
        Command::Stats => read::stats(&open_existing(&cli.store)?, json),
        Command::Verify => read::verify(&open_existing(&cli.store)?, json),
        Command::Repair => read::repair(&cli.store, json),
        Command::Demo => demo::run(&open(&cli.store)?, json),
        Command::Delete {
            project,
            session,
            trace,
            user,
        } => {
            let target = match (project, session, trace, user) {
                (Some(project), Some(session), None, None) => {
                    lifecycle::Target::Session { project, session }
                }
                (Some(project), None, None, None) => lifecycle::Target::Project(project),
                (None, None, Some(trace), None) => lifecycle::Target::Trace(trace),
                (None, None, None, Some(user)) => lifecycle::Target::User(user),
                _ => {
                    return Err(CliError(
                        "delete takes one of --project P [--session S], --trace ID, --user U"
                            .into(),
                    ));
                }
            };
            lifecycle::delete(&open_existing(&cli.store)?, target, json)
        }
        Command::Retain {
            project,
            max_age,
            max_sessions,
        } => lifecycle::retain(
            &open_existing(&cli.store)?,
            project,
            max_age,
            max_sessions,
            json,
        ),
        Command::Compact => lifecycle::compact(open_existing(&cli.store)?, json),
        Command::Serve {
            listen,
            project,
            max_body_bytes,
            max_buffered_bytes,
            threads,
        } => {
            if max_buffered_bytes < max_body_bytes {
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--max-buffered-bytes ({max_buffered_bytes}) must be at least --max-body-bytes ({max_body_bytes}), or no body of the largest size could be read"
                        ),
                    )
                    .exit();
            }
            serve::run(
                // Once listening: an address that cannot be bound leaves no
                // new store.
                || open(&cli.store),
                {
                    let dir = cli.store.clone();
                    Box::new(move || SessionStore::open(&dir))
                },
                &serve::ServeOptions {
                    listen,
                    project,
                    max_body_bytes,
                    max_buffered_bytes,
                    threads: usize::from(threads),
                },
            )
        }
    }
}
