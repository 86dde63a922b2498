//! Service construction (zero2prod's `startup.rs`): everything a configuration needs to serve
//! requests, built once per configuration and shared, read-only, by every request. The request
//! lifecycle (`gate`) only runs requests over what is built here; `server` builds a new set on
//! reload and swaps it in whole.

use http::HeaderValue;
use std::sync::Arc;

use crate::api::{Api, ApiState};
use crate::auth::AuthService;
use crate::billing::Billing;
use crate::billing::task_watch::TaskWatch;
use crate::billing::tasks::TaskCharges;
use crate::config::Config;
use crate::payments::Payments;
use crate::proxy::cors::Cors;
use crate::proxy::routes::RouteTable;
use crate::proxy::tenancy::Owners;
use crate::proxy::upgrade::Tunnels;
use crate::proxy::upstream::Upstream;
use crate::store::Store;

/// The services of one configuration.
pub struct Services {
    pub config: Arc<Config>,
    /// `[[route]]` compiled into a matcher, with the route unknown paths follow.
    pub routes: RouteTable,
    /// The `[[static]]` mounts: frontends served from the gate's origin.
    pub statics: crate::proxy::statics::Statics,
    pub cors: Cors,
    pub upstream: Arc<Upstream>,
    /// The `Host` every request to the backend carries.
    pub upstream_host: HeaderValue,
    pub auth: Arc<AuthService>,
    pub billing: Arc<Billing>,
    pub payments: Arc<Payments>,
    /// Who owns the ids the backend handed out (`tenancy`).
    pub owners: Owners,
    /// Charges linked to the tasks they started (`[tasks]`), and the gate's own poll of them.
    pub task_watch: Option<Arc<TaskWatch>>,
    /// The gate's own endpoints.
    pub api: Api,
    /// Upgraded connections, shared across reloads (they outlive the configuration).
    pub tunnels: Tunnels,
    /// The TLS acceptor, when `[server.tls]` is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The one pool every service shares (for operations and tests that inspect it).
    store: Store,
}

impl Services {
    /// Builds every service of `config`; must run inside the tokio runtime (the auth service
    /// and the payment reconciler start tasks).
    pub fn build(config: Config, store: Store, tunnels: Tunnels) -> Result<Services, String> {
        let routes = RouteTable::build(&config).map_err(|e| e.to_string())?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::formats::tls_files::acceptor(cert, key)?),
            None => None,
        };
        let config = Arc::new(config);
        let auth = AuthService::new(config.clone(), store.clone())?;
        let billing = Arc::new(Billing::new(store.clone(), config.clone()));
        let payments = Arc::new(Payments::new(
            store.clone(),
            billing.clone(),
            config.clone(),
        )?);
        payments.spawn_reconciler();
        let upstream = Arc::new(Upstream::new(&config.upstream, config.workers));
        let upstream_host = HeaderValue::from_str(upstream.authority().as_str())
            .expect("an authority is a valid header value");
        let owners = Owners::new(store.clone());
        let task_watch = config.tasks.clone().map(|tasks| {
            let watch = Arc::new(TaskWatch {
                charges: Arc::new(TaskCharges::new(store.clone(), tasks)),
                upstream: upstream.clone(),
                upstream_host: upstream_host.clone(),
                auth: auth.clone(),
                namespaced: config.tenancy.namespace,
            });
            TaskWatch::spawn(&watch);
            watch
        });
        let api = Api::new(Arc::new(ApiState {
            config: config.clone(),
            probe: store.probe(),
            upstream: upstream.clone(),
            auth: auth.clone(),
            billing: billing.clone(),
            payments: payments.clone(),
        }));
        Ok(Services {
            cors: Cors::new(&config.cors),
            statics: crate::proxy::statics::Statics::new(&config.mounts),
            config,
            routes,
            upstream,
            upstream_host,
            auth,
            billing,
            payments,
            owners,
            task_watch,
            api,
            tunnels,
            tls,
            store,
        })
    }

    /// Builds the services and writes the configuration's quota types and new plans to the
    /// store: what serving a configuration needs, at start and on every reload.
    pub async fn prepare(
        config: Config,
        store: Store,
        tunnels: Tunnels,
    ) -> Result<Arc<Services>, String> {
        let services = Services::build(config, store, tunnels)?;
        services
            .billing
            .seed()
            .await
            .map_err(|e| format!("cannot seed plans and quota types: {}", e.detail))?;
        Ok(Arc::new(services))
    }

    /// The store every service shares.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn auth(&self) -> &Arc<AuthService> {
        &self.auth
    }

    pub fn billing(&self) -> &Arc<Billing> {
        &self.billing
    }

    pub fn payments(&self) -> &Arc<Payments> {
        &self.payments
    }

    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    pub fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }
}
