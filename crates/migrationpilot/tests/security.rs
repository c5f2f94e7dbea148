//! Adversarial tests: what an operator's trust rests on, tried as an attacker or a careless
//! neighbour would, over real sockets and real files on loopback. One module per front:
//!
//! - `secrets`: no secret a stage receives is shown or stored in clear;
//! - `server`: `serve` cannot be held, and its API is as strict as its document;
//! - `store`: the store is ours or refused, and run ids are never reused;
//! - `files`: pipeline and items files are bounded, and never a FIFO or a device;
//! - `terminal`: what a stage prints cannot take over the operator's terminal; a dead run looks
//!   dead, and its children die with it.

mod common;

#[path = "security/files.rs"]
mod files;
#[path = "security/secrets.rs"]
mod secrets;
#[path = "security/server.rs"]
mod server;
#[path = "security/store.rs"]
mod store;
#[path = "security/terminal.rs"]
mod terminal;
