//! Why a configuration could not be loaded ([`ConfigError`]), and the parse of one TOML layer
//! that names its file in the error.

use std::path::{Path, PathBuf};

use super::ServeArgs;

/// Why the configuration could not be loaded.
///
/// `Read` and `Parse` carry the underlying error as their `source()`; print
/// with `{:#}` (anyhow) or walk the chain to see it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown/ill-typed keys.
    #[error("invalid config{}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when parsed from one.
        path: Option<PathBuf>,
        /// The TOML error, with line, column and the offending key.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Parses one TOML layer; `path` names the file in errors.
pub(super) fn parse_toml(text: &str, path: Option<&Path>) -> Result<ServeArgs, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.map(Path::to_owned),
        source,
    })
}
