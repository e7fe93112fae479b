//! Errors and warnings: what was wrong, and where (`file:line:column`).
//!
//! Every parser in this crate collects all the problems it finds in a file rather than
//! stopping at the first, like Amanda does. An [`Error`] makes the configuration unusable;
//! a [`Warning`] (an unknown keyword, a keyword in the wrong block, a parameter set twice)
//! does not: real configurations carry many keywords amanda-rs does not use.
//!
//! What this module must not do: decide policy (which problems are errors); the parsers do.

use std::fmt;

use crate::source::Location;

/// Why a configuration could not be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A token of the wrong kind: `expected an integer, found "abc"`.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What the grammar wanted, in words.
        expected: String,
        /// What the file has (quoted source text, or "end of line").
        found: String,
    },
    /// A `"` with no closing `"` on the same line.
    #[error("unterminated quoted string (a newline inside quotes must be escaped with \\)")]
    UnterminatedString,
    /// A `{` that is not closed before the end of the file.
    #[error("\"{{\" is not closed by a \"}}\" before the end of the file")]
    UnclosedBlock,
    /// A `}` with no open block.
    #[error("\"}}\" without a matching \"{{\"")]
    UnmatchedClose,
    /// A value that parsed but is not allowed: `inparallel must be positive, found 0`.
    #[error("{keyword} {constraint}, found {found}")]
    Invalid {
        /// The keyword as written.
        keyword: String,
        /// The rule, e.g. "must be positive".
        constraint: String,
        /// The offending value as written.
        found: String,
    },
    /// A number that does not fit the parameter's type.
    #[error("value too large for {keyword}: {found}")]
    TooLarge {
        /// The keyword as written.
        keyword: String,
        /// The value as written.
        found: String,
    },
    /// A reference to a definition that does not exist (at that point of the file).
    #[error("{kind} {name:?} is not defined{hint}")]
    Undefined {
        /// dumptype, holdingdisk, application, ...
        kind: &'static str,
        /// The name as written.
        name: String,
        /// Extra advice (may be empty).
        hint: String,
    },
    /// A definition whose name is taken.
    #[error("{kind} {name:?} is already defined at {previous}")]
    Duplicate {
        /// dumptype, holdingdisk, ...
        kind: &'static str,
        /// The name.
        name: String,
        /// Where the first definition is.
        previous: Location,
    },
    /// An `includefile` that includes itself, directly or not.
    #[error("includefile {path:?} includes itself (through {chain})")]
    IncludeCycle {
        /// The file.
        path: String,
        /// The chain of files, outermost first.
        chain: String,
    },
    /// `includefile` nested deeper than the limit.
    #[error("includefile nested more than {limit} deep")]
    IncludeTooDeep {
        /// The limit.
        limit: usize,
    },
    /// A file that could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error text.
        reason: String,
    },
    /// Anything else, with Amanda's own wording where it has one.
    #[error("{0}")]
    Other(String),
}

/// An error at a place in a file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct Error {
    /// Where.
    pub location: Location,
    /// What.
    pub kind: ErrorKind,
}

/// Something suspicious that does not stop the configuration from being used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A keyword this parser does not know; the rest of its line (and its block) is skipped.
    UnknownKeyword {
        /// The keyword as written.
        keyword: String,
        /// Where it was: "amanda.conf", "dumptype block", ...
        context: &'static str,
    },
    /// A keyword Amanda knows, but not in this kind of block; it is ignored.
    NotValidHere {
        /// The keyword as written.
        keyword: String,
        /// The block kind.
        context: &'static str,
    },
    /// Amanda 3.5 marks this keyword deprecated.
    Deprecated {
        /// The keyword as written.
        keyword: String,
    },
    /// A global parameter set more than once: the last value wins.
    SetTwice {
        /// The keyword as written.
        keyword: String,
        /// The earlier assignment.
        previous: Location,
    },
    /// Free text.
    Other(String),
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::UnknownKeyword { keyword, context } => {
                write!(f, "unknown keyword {keyword:?} in {context}, ignored")
            }
            WarningKind::NotValidHere { keyword, context } => {
                write!(f, "keyword {keyword:?} is not valid in {context}, ignored")
            }
            WarningKind::Deprecated { keyword } => write!(f, "keyword {keyword:?} is deprecated"),
            WarningKind::SetTwice { keyword, previous } => write!(
                f,
                "{keyword} is set again (first set at {previous}); the last value wins"
            ),
            WarningKind::Other(s) => f.write_str(s),
        }
    }
}

/// A warning at a place in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// What.
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.location, self.kind)
    }
}

/// All the errors (at least one) found in a configuration, plus its warnings.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct Errors {
    /// The errors, in file order.
    pub errors: Vec<Error>,
    /// The warnings found on the way.
    pub warnings: Vec<Warning>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Errors {
    /// The messages of the errors, one string each (handy in tests and logs).
    pub fn messages(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.to_string()).collect()
    }
}

/// A parsed value together with the warnings its parse produced.
#[derive(Clone, Debug)]
pub struct Loaded<T> {
    /// The value.
    pub value: T,
    /// Warnings, in file order.
    pub warnings: Vec<Warning>,
}

/// Collects diagnostics while a parser runs.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
}

impl Sink {
    pub fn error(&mut self, location: Location, kind: ErrorKind) {
        // A file with thousands of errors is not worth reporting in full; this also bounds
        // memory on hostile input.
        if self.errors.len() < 1000 {
            self.errors.push(Error { location, kind });
        }
    }

    pub fn warn(&mut self, location: Location, kind: WarningKind) {
        if self.warnings.len() < 1000 {
            self.warnings.push(Warning { location, kind });
        }
    }

    pub fn finish<T>(self, value: T) -> Result<Loaded<T>, Errors> {
        if self.errors.is_empty() {
            Ok(Loaded {
                value,
                warnings: self.warnings,
            })
        } else {
            Err(Errors {
                errors: self.errors,
                warnings: self.warnings,
            })
        }
    }
}
