//! Start-up and command errors: one line naming the setting and what is wrong.

use std::fmt;

/// A failure the operator can act on.
#[derive(Debug)]
pub struct AppError {
    /// The flag (and its variable) at fault, when one is.
    pub setting: Option<&'static str>,
    /// What is wrong, in plain words.
    pub message: String,
}

impl AppError {
    /// An error about one setting.
    pub fn setting(setting: &'static str, message: impl Into<String>) -> Self {
        Self { setting: Some(setting), message: message.into() }
    }

    /// An error not tied to a setting.
    pub fn other(message: impl Into<String>) -> Self {
        Self { setting: None, message: message.into() }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.setting {
            Some(s) => write!(f, "error: {s}: {}", self.message),
            None => write!(f, "error: {}", self.message),
        }
    }
}

impl std::error::Error for AppError {}
