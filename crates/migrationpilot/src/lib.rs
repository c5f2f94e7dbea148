//! The `migrationpilot` command line's parts, as a library so tests and benchmarks reach them.
//!
//! - [`file`](mod@file): pipeline files (YAML/TOML, located errors).
//! - [`env`](mod@env): `${NAME}` substituted into parsed values, and the secrets it brings.
//! - [`schema`](mod@schema): the JSON Schema of pipeline files, for editors and validators.
//! - [`secrets`]: what a run knows to be secret, masked wherever anything is shown or stored.
//! - [`build`]: a parsed file to the pipeline, healer, health monitor and alert channels.
//! - [`inject`]: `run --chaos`: faults injected into a real run's attempts and checks.
//! - [`command`]: stage commands (argv without a shell, `{item}` as one argument).
//! - [`store`]: the `Store` traits and their SQLite and PostgreSQL backends.
//! - [`dispatch`]: a coordinating run's attempts handed to the work queue, results read back.
//! - [`worker`]: what `worker` (and a coordinating run itself) does: claims jobs, runs them.
//! - [`journal`]: the group-commit writer between the event bus and the store.
//! - [`control`]: applying other processes' requests to a running pipeline.
//! - [`session`]: one file run against one store, wired once (journal, steering, monitor,
//!   signals).
//! - [`simulate`]: a file's pipeline and healer run in virtual time against modelled faults,
//!   beside other contenders; nothing runs, probes or sends.
//! - [`error`]: what a command can fail with, and its exit status.
//! - [`progress`]: what a run prints.
//! - [`terminal`]: everything printed for a person passes here: control characters from stages
//!   escaped, a closed pipe a quiet end of printing.
//! - [`project_alerts`]: a project's alerts outside its runs: what runs left owed delivered,
//!   `run-lost` raised.
//! - [`serve`]: the HTTP API, event stream, `/metrics` and dashboard (`serve`, `run --listen`).

pub mod build;
pub mod command;
pub mod control;
pub mod dispatch;
pub mod env;
pub mod error;
pub mod file;
pub mod inject;
pub mod journal;
pub mod progress;
pub mod project_alerts;
pub mod schema;
pub mod secrets;
pub mod serve;
pub mod session;
pub mod simulate;
pub mod store;
pub mod terminal;
pub mod worker;
