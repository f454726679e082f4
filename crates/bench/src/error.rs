//! What can go wrong in a benchmark invocation. Each variant's message is its own
//! part only; the cause is its [`source`](std::error::Error::source), so a caller
//! that prints the chain (the `twin` binary does, `outer: inner: ...`) shows the
//! whole story: which run, then what failed in it.
//!
//! Limits: most failures of a run (a process that reported something that does
//! not add up) are one message, [`Error::Run`]; they are for a person to read, not
//! for a program to tell apart.

use std::path::{Path, PathBuf};

use crate::procs;

/// A failed benchmark invocation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options ask for something the benchmark cannot run.
    #[error("{0}")]
    Options(String),
    /// A run's processes misbehaved, or their reports do not add up.
    #[error("{0}")]
    Run(String),
    /// Starting, watching, measuring or stopping a process failed.
    #[error(transparent)]
    Proc(#[from] procs::Error),
    /// Where `source` happened (a run, a configuration).
    #[error("{what}")]
    Within {
        /// The run or step.
        what: String,
        /// What failed in it.
        #[source]
        source: Box<Error>,
    },
    /// A file or directory could not be read, written or created.
    #[error("cannot {action} {}", path.display())]
    File {
        /// `read`, `write` or `create`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The scratch directory for the runs' sockets could not be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The results could not be serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Drawing a chart failed (the plotters error, as text).
    #[error("drawing a chart failed: {0}")]
    Chart(String),
}

impl Error {
    /// A failed file operation.
    pub(crate) fn file(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::File {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Says where an error happened ([`Error::Within`]).
pub(crate) trait ResultExt<T> {
    fn within(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn within(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::Within {
            what: what(),
            source: Box::new(e.into()),
        })
    }
}

/// `Err(Error::Run(format!(...)))`.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Run(format!($($arg)*)))
    };
}
pub(crate) use fail;
