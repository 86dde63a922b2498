//! The reverse proxy: path normalisation, the route table, header operations, streamed
//! forwarding with limits and timeouts, upgrades, CORS, and tenant isolation (`tenancy`: what
//! the proxy rewrites and checks so that no account reaches another's patients). The order in
//! which a request goes through them is in `crate::gate`.

pub mod body;
pub mod cors;
pub mod headers;
pub mod outbound;
pub mod path;
pub mod reply_body;
pub mod routes;
pub mod settle;
pub mod statics;
pub mod tenancy;
pub mod upgrade;
pub mod upstream;
