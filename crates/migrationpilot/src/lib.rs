//! The `migrationpilot` command line's parts, as a library so tests and benchmarks reach them.
//!
//! - [`file`](mod@file): pipeline files (YAML/TOML, `${NAME}`, located errors).
//! - [`build`]: a parsed file to the pipeline, healer, health monitor and alert channels.
//! - [`command`]: stage commands (argv without a shell, `{item}` as one argument).
//! - [`store`]: the `Store` trait and its SQLite implementation.
//! - [`journal`]: the group-commit writer between the event bus and the store.
//! - [`control`]: applying other processes' requests to a running pipeline.
//! - [`progress`]: what a run prints.

pub mod build;
pub mod command;
pub mod control;
pub mod file;
pub mod journal;
pub mod progress;
pub mod store;
