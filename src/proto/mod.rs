//! The sans-IO core: the whole ws-relay protocol with no sockets, no clock
//! reads, no threads and no randomness. Time is an argument; output is bytes
//! per connection and a queue of [`Action`]s. Same inputs, same outputs.
//!
//! Data flows one way, and the modules are named for what they hold:
//!
//! - bytes → [`handshake`] (the upgrade request; [`http`] routes and answers
//!   plain requests) or [`frame`] (RFC 6455 frames, with [`utf8`] validation)
//! - → [`message`] (frames into messages, within the limits; [`deflate`]
//!   inflates compressed ones, and compresses what goes out)
//! - → [`envelope`] (`<target> <rest>`) and [`room`] (who is where)
//! - → [`relay`], which holds every [`conn`]ection and its [`output`]: the
//!   bytes each driver writes and the bound that makes a slow consumer
//! - → [`action`]s for the driver. [`timer`] and [`rate`] keep deadlines and
//!   flood budgets; [`stats`] and [`metrics`] count.

pub(crate) mod action;
pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod budget;
pub(crate) mod config;
pub(crate) mod conn;
pub(crate) mod deflate;
pub(crate) mod envelope;
pub(crate) mod error;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod http;
pub(crate) mod message;
pub(crate) mod metrics;
pub(crate) mod output;
pub(crate) mod pages;
pub(crate) mod proxy;
pub(crate) mod rate;
pub(crate) mod relay;
pub(crate) mod room;
pub(crate) mod shard;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod table;
pub(crate) mod timer;
pub(crate) mod utf8;
