//! The integration suite: one test binary (builds are the slow part of CI), one module per area.

mod common;

mod config;
mod gate_api;
mod lifecycle;
mod paths;
mod proxy;
mod store;
