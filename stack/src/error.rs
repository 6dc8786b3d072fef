//! What can go wrong loading or converting a Compose file. Every problem inside a file
//! names the file, line and column and the key path, as a compiler does.

use std::fmt;
use std::io;

/// A problem at a place in a Compose file:
/// `stack.yml:6:17: services.web.deploy.replicas: expected an integer, found "three"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as it was named to the loader.
    pub file: String,
    /// 1-based.
    pub line: u64,
    /// 1-based, in characters.
    pub column: u64,
    /// The key path, e.g. `services.web.ports[0].published`; empty for YAML syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no Compose file given")]
    NoFiles,
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A YAML syntax error, a value of the wrong type or form, an unknown key, a reference
    /// to something undefined, ...
    #[error("{0}")]
    Invalid(Diagnostic),
    /// A `.env` file or an `env_file` that is not `KEY=VALUE` lines.
    #[error("{file}:{line}: {message}")]
    EnvFile {
        file: String,
        line: usize,
        message: String,
    },
}

impl LoadError {
    /// The located problem, if the error is one.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            LoadError::Invalid(d) => Some(d),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid stack name {0:?}: use letters, digits, '_', '-' and '.', starting with a letter or digit")]
    InvalidStackName(String),
    #[error("service name {name:?} is {len} characters long; names are at most 63 (the stack name and the service name with '_' between them)")]
    NameTooLong { name: String, len: usize },
}

/// A problem found in the tree, before its file index is turned into a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub pos: crate::document::Pos,
    pub path: String,
    pub message: String,
}

impl Located {
    pub fn new(
        pos: crate::document::Pos,
        path: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        Located {
            pos,
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// Names the file; `files` are the names given to the loader, in order.
    pub fn into_diagnostic(self, files: &[String]) -> Diagnostic {
        Diagnostic {
            file: files
                .get(self.pos.file)
                .cloned()
                .unwrap_or_else(|| "<unknown>".to_owned()),
            line: self.pos.line,
            column: self.pos.column,
            path: self.path,
            message: self.message,
        }
    }
}

/// The merged document could not be written as YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write the Compose file as YAML: {0}")]
pub struct OutputError(pub String);
