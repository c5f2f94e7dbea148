//! What can go wrong in a command, and the exit status each gives (documented in docs/CLI.md).

use std::process::ExitCode;

use crate::store::StoreError;

/// The run failed.
pub const EXIT_FAILED: u8 = 1;
/// The input is wrong: command line, pipeline file, or a name the project does not have.
pub const EXIT_INVALID: u8 = 2;
/// The run was rolled back.
pub const EXIT_ROLLED_BACK: u8 = 3;
/// The run was cancelled (Ctrl-C).
pub const EXIT_CANCELLED: u8 = 130;

/// A command that could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong input: the message says what and where. Exit 2.
    #[error("{0}")]
    Invalid(String),
    /// A pipeline file that cannot be read or parsed; the error names file, line, column and
    /// key. Exit 2.
    #[error("{0}")]
    Parse(#[from] crate::file::FileError),
    /// A pipeline file with problems, each already printed. Exit 2.
    #[error("{path}: {count} error(s)")]
    File {
        /// The pipeline file, as given.
        path: String,
        /// How many problems were found.
        count: usize,
    },
    /// The store could not be opened, read or written. Exit 1.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Anything else that failed. Exit 1.
    #[error("{0}")]
    Failed(String),
}

impl From<crate::control::Refused> for CliError {
    fn from(refused: crate::control::Refused) -> Self {
        match refused {
            crate::control::Refused::Store(error) => CliError::Store(error),
            other => CliError::Invalid(other.to_string()),
        }
    }
}

impl CliError {
    /// Whether the message stands on its own (it starts with the file it is about) rather than
    /// after the program's name.
    pub fn is_located(&self) -> bool {
        matches!(self, CliError::Parse(_) | CliError::File { .. })
    }

    /// The process exit status for this error: 2 for wrong input, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Invalid(_) | CliError::Parse(_) | CliError::File { .. } => EXIT_INVALID,
            CliError::Store(_) | CliError::Failed(_) => EXIT_FAILED,
        })
    }
}
