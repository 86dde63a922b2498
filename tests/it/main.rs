//! The integration suite: one test binary (builds are the slow part of CI), one module per area.

/// Stamps out a `sqlite` and a `postgres` test module running the same `async fn(Db)` checks:
/// every store-level behaviour is tested on both databases.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name(crate::common::Db::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(crate::common::Db::Postgres).await } )*
        }
    };
}

mod common;

mod accounts;
mod admin;
mod alipay;
mod attacks;
mod backend_wire;
mod config;
mod connections;
mod faults;
mod frontends;
mod gate_api;
mod ledger_props;
mod lifecycle;
mod metering;
mod outages;
mod paths;
mod payments;
mod portal;
mod proxy;
mod settlement;
mod store;
mod subscriptions;
mod tenancy;
mod tls;
mod wechat;
mod workers;
