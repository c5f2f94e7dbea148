//! Faults as data, and a dependency that suffers them: what `migrationpilot simulate` runs a
//! pipeline's healing against in virtual time, and what the chaos benchmark compares
//! contenders on. One model of a failing dependency, used by both.
//!
//! - [`Scenario`]: a named fault with its parameters, read from `NAME[:key=value,…]`
//!   (`outage:for=30s`, `transient:rate=20%`), and [`CATALOG`], the twelve scenarios
//!   run when none is named. [`KINDS`] documents every name and parameter.
//! - [`Downstream`]: the modelled dependency. Every call of a stage that calls it goes through
//!   [`Downstream::call`], which waits the call's latency on tokio time and answers as the
//!   fault says; a health check asks [`Downstream::answers`]; a stage's `reset` calls
//!   [`Downstream::reset`]. It counts what it saw: calls, calls while down, and those a healer
//!   could have held back because the spell was already known.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! use std::time::Duration;
//! use self_healing::chaos::{Downstream, Scenario};
//!
//! let scenario: Scenario = "outage:at=1s,for=10s".parse()?;
//! let downstream = Downstream::new(&scenario, 7);
//! assert!(downstream.call(0).await.is_ok());
//! tokio::time::sleep(Duration::from_secs(2)).await;
//! let refused = downstream.call(1).await.unwrap_err();
//! assert_eq!(refused.code(), Some("ECONNREFUSED"));
//! assert!(!downstream.answers());
//! assert_eq!(downstream.tally().calls_while_down, 1);
//! # Ok::<(), String>(())
//! # }).unwrap();
//! ```

mod downstream;
mod scenario;

pub use downstream::{Downstream, Tally};
pub use scenario::{
    CATALOG, COMMON, Callers, Fault, KINDS, Kind, LONGEST, Param, SHORTEST_SPELL, Scenario, pairs,
    percent, share,
};
