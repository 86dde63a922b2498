//! The reverse proxy: path normalisation, the route table, header operations, streamed
//! forwarding with limits and timeouts, upgrades, and CORS. The order in which a request goes
//! through them is in `crate::gate`.

pub mod backend;
pub mod body;
pub mod chunked;
pub mod cors;
pub mod forward;
pub mod headers;
pub mod path;
pub mod pool;
pub mod reply;
pub mod routes;
pub mod settle;
pub mod upgrade;
pub mod wire;
