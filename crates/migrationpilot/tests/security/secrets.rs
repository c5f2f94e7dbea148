//! See `security.rs`.
