//! idoctor-gate: a reverse-proxy sidecar that turns the iDoctor DICOM-processing backend into a
//! commercial product without changing it. See `DESIGN.md` of the project for the architecture;
//! `gate` holds the request lifecycle every request goes through.

pub mod api;
pub mod auth;
pub mod billing;
pub mod config;
pub mod error;
pub mod formats;
pub mod gate;
pub mod payments;
pub mod proxy;
pub mod server;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
