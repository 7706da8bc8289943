//! coffer: a self-hostable Lightning payment gateway for autonomous AI agents.
//!
//! - [`gateway`]: the operations, over a [`store::Store`], with their clock;
//! - [`model`]: what the gateway, the events and the edges share (the wire views);
//! - [`store`]: storage, one folder per backend;
//! - [`payment`]: payments by kind (inside the gateway, and out through Lightning);
//! - [`lightning`]: the funding sources (LNbits, LND, Core Lightning);
//! - [`http`]: the HTTP API; [`cli`]: the command line;
//! - [`bridge`]: rooms mirrored into messengers (Telegram, Matrix);
//! - [`egress`]: the guard on every request made on someone's behalf;
//! - [`tls`]: the process's TLS provider;
//! - the domain (gateway, payment, events, model, store, lightning) imports no
//!   edge (http, cli, mcp): `tests/layers.rs` checks it;
//! - the pure rules (amounts, ledger, policy) live in the `coffer-core` crate.

pub mod bridge;
pub mod cli;
pub mod connections;
pub mod egress;
pub mod error;
pub mod events;
pub mod fiat;
pub mod gateway;
pub mod http;
pub mod l402;
pub mod lightning;
pub mod limits;
pub mod live;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod nwc;
pub mod payment;
pub mod quota;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;
