//! A registry file's problems, every one with its line.

use std::fmt;

/// Everything wrong with one registry file, sorted by line. Rendered one
/// problem per line as `<origin>:<line>: <message>`, the form editors and
/// terminals link to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// The file's path (or `demo` for the built-in registry).
    pub origin: String,
    pub problems: Vec<Problem>,
}

/// One problem. `line` is 1-based; 0 when the problem is the file itself
/// (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl RegistryError {
    /// The problem at `line`'s messages, for tests and tools.
    pub fn at_line(&self, line: usize) -> Vec<&str> {
        self.problems
            .iter()
            .filter(|p| p.line == line)
            .map(|p| p.message.as_str())
            .collect()
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if p.line == 0 {
                write!(f, "{}: {}", self.origin, p.message)?;
            } else {
                write!(f, "{}:{}: {}", self.origin, p.line, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}
