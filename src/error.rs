//! The error type: what went wrong and what the caller can do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Broad classes of [`Error`], for callers that branch on the kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An operating-system I/O call failed.
    Io,
    /// Another process (or another handle in this process) has the store open.
    Locked,
    /// Stored data failed a checksum or could not be decoded.
    Corrupted,
    /// A previous write or fsync failed; writes are refused until reopen.
    Poisoned,
    /// The caller passed something invalid (a cursor from another query, a
    /// malformed one). Options out of range are clamped, not refused.
    InvalidInput,
    /// The directory holds a store in a format this version cannot read.
    Incompatible,
}

/// Everything that can go wrong in a store operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. `context` says what was being done and on which path.
    /// Retrying may help if the cause (for example a full disk) is fixed.
    Io {
        /// What the store was doing.
        context: String,
        /// The operating-system error.
        source: io::Error,
    },
    /// The store directory is locked by another open store. Close the other
    /// handle or process first; opening twice would corrupt the log.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A log frame is damaged: its checksum does not match, or it does not
    /// decode. The store refuses to open rather than silently lose data; see
    /// `StoreOptions::salvage_log` and `docs/FORMAT.md` ("Salvage").
    Corruption {
        /// The segment file holding the damaged frame.
        segment: PathBuf,
        /// Byte offset of the frame inside that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The index database (redb) reported an error. The index is derived
    /// from the log; [`crate::SessionStore::rebuild_indexes`] recreates it.
    Index(Box<redb::Error>),
    /// A previous write or fsync failed, so the store can no longer promise
    /// that what it acknowledges is on disk. Writes are refused; reads still
    /// work, unless the failure left acknowledged spans unindexed (a failed
    /// index commit), when they fail too. Reopen the store to recover from the log (the reopen writes
    /// again what the log held past its last durable point when the write
    /// or fsync failed; see [`crate::OpenReport::log_rewritten_bytes`]).
    ///
    /// The call that fails and poisons the store returns this error too, with
    /// the failure as its `cause` (also its [`std::error::Error::source`]); every
    /// later refusal carries the same cause.
    Poisoned {
        /// The failure that poisoned the store (for example the OS error of a
        /// failed fsync); `None` if a thread panicked while writing.
        cause: Option<Arc<Error>>,
    },
    /// The caller passed an invalid argument (for example a cursor that this
    /// store did not produce).
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },
    /// The directory holds data in a format this version cannot read.
    Incompatible {
        /// What did not match.
        reason: String,
    },
}

impl Error {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Corruption { .. } => ErrorKind::Corrupted,
            Error::Index(e) => match e.as_ref() {
                redb::Error::Corrupted(_) => ErrorKind::Corrupted,
                redb::Error::DatabaseAlreadyOpen => ErrorKind::Locked,
                redb::Error::PreviousIo => ErrorKind::Poisoned,
                _ => ErrorKind::Io,
            },
            Error::Poisoned { .. } => ErrorKind::Poisoned,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Incompatible { .. } => ErrorKind::Incompatible,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// `Poisoned` without a known cause: a thread panicked while holding a
    /// writer's lock.
    pub(crate) fn panicked() -> Self {
        Error::Poisoned { cause: None }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            Error::Locked { path } => write!(
                f,
                "store is already open (lock held on {}); close the other handle or process first",
                path.display()
            ),
            Error::Corruption {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "corrupted log frame in {} at offset {offset}: {reason}",
                segment.display()
            ),
            Error::Index(e) => write!(f, "index error: {e}"),
            Error::Poisoned { cause: Some(cause) } => write!(
                f,
                "store is poisoned by an earlier failure ({cause}); writes are refused until it is reopened"
            ),
            Error::Poisoned { cause: None } => write!(
                f,
                "store is poisoned (a thread panicked while writing); writes are refused until it is reopened"
            ),
            Error::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            Error::Incompatible { reason } => write!(f, "incompatible store format: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Index(e) => Some(e.as_ref()),
            Error::Poisoned { cause: Some(c) } => Some(c.as_ref()),
            _ => None,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Index(Box::new(e.into()))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError,
    redb::CursorError
);

/// A request body that does not decode is invalid input, so that `?` takes
/// [`crate::otlp::decode_protobuf`] and [`crate::otlp::decode_json`] in a
/// function returning [`Result`].
#[cfg(feature = "otlp")]
impl From<crate::otlp::DecodeError> for Error {
    fn from(e: crate::otlp::DecodeError) -> Self {
        Error::invalid(e.to_string())
    }
}

/// Whether a log or store is poisoned, and by what.
#[derive(Debug, Default)]
pub(crate) struct Poison {
    set: AtomicBool,
    cause: OnceLock<Arc<Error>>,
}

impl Poison {
    /// True once poisoned.
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Poisons with `cause` (the first cause is kept) and returns the error
    /// to report for it.
    pub(crate) fn poison(&self, cause: Error) -> Error {
        let _ = self.cause.set(Arc::new(cause));
        self.set.store(true, Ordering::Release);
        self.error()
    }

    /// Poisons with a cause that is already shared (taken from another
    /// `Poisoned` error); the first cause is kept.
    pub(crate) fn adopt(&self, cause: Option<Arc<Error>>) {
        if let Some(c) = cause {
            let _ = self.cause.set(c);
        }
        self.set.store(true, Ordering::Release);
    }

    /// The error that refuses a write: `Poisoned` with the first cause.
    pub(crate) fn error(&self) -> Error {
        Error::Poisoned {
            cause: self.cause.get().cloned(),
        }
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
