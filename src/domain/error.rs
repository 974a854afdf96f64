//! Validation errors reported to clients, one per failing field.

use serde::Serialize;

/// One refused field: its dotted path, a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path, e.g. `personal.phone`.
    pub field: String,
    /// Stable machine-readable code, e.g. `invalid_phone`.
    pub code: &'static str,
    /// Human-readable explanation; never echoes the refused value.
    pub message: String,
}

impl FieldError {
    /// Builds an error.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code, message: message.into() }
    }
}
