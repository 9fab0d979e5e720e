//! A running guard: the listener, the shared application state, and a way
//! to stop it. Tests, the demo and `serve` all start the guard this way, so
//! tests exercise the real server on port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::base::clock::Clock;
use crate::config::Config;
use crate::net::server::{self, ServerOptions};
use crate::pipeline::egress::{self, Interceptor};
use crate::pipeline::App;
use crate::store::fleet::Fleet;
use crate::store::redis::{Health, RedisLink};
use crate::store::shared::SharedStore;
use crate::store::{MemoryStore, Store};

/// Applies the safe-list edits saved in Redis; false when Redis could not
/// be read.
async fn load_safe_edits(app: &App, fleet: &Fleet) -> bool {
    match fleet.safe_edits().await {
        Ok(edits) => {
            for (prefix, value, add) in edits {
                if let Err(e) = app.edit_safe(prefix, &value, add) {
                    tracing::warn!(error = %e, "a saved safe-list edit was not applied");
                }
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "saved safe-list edits not read");
            false
        }
    }
}

pub struct Guard {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tls: bool,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    admin_stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Guard {
    /// Binds `listen.addr` (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Guard, String> {
        let listener = TcpListener::bind(config.listen.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let local = MemoryStore::new(config.store.capacity, config.store.block_capacity);
        if let Some(b) = &config.backoff {
            local.set_backoff_lifetime(crate::base::clock::ms(b.reset_after));
        }
        let local = Arc::new(local);
        let (health_tx, mut health_rx) = tokio::sync::watch::channel(Health::Up);
        let shared = if config.store.shared() {
            let link = RedisLink::connect(&config.store, move |h: &Health| {
                health_tx.send_replace(h.clone());
            })
            .await
            .map_err(|e| e.to_string())?;
            let shared = SharedStore::new(local.clone(), link, &config.store);
            // Blocks other replicas set are enforced from the first send.
            match shared.sync(clock.now()).await {
                Ok(n) => tracing::info!(blocks = n, "shared blocks mirrored"),
                Err(e) => tracing::warn!(error = %e, "shared blocks not mirrored at start"),
            }
            Some(shared)
        } else {
            None
        };
        let interceptor = Interceptor::from_config(&config)?;
        let tls = interceptor
            .as_ref()
            .filter(|_| config.listen.tls)
            .map(|i| i.tls.clone());
        let store: Arc<dyn Store> = match &shared {
            Some(s) => s.clone(),
            None => local,
        };
        let mut app = App::new(Arc::new(config), store, clock.clone())?;
        let mut fleet_from = None;
        if let Some(s) = &shared {
            let fleet = Fleet::start(s.link().clone(), clock.clone());
            app = app.with_shared(s.clone(), fleet.clone());
            // Safe-list edits stand across restarts; the adaptive stage
            // starts from the fleet's last day, not from nothing.
            let loaded = load_safe_edits(&app, &fleet).await;
            if !loaded {
                tracing::warn!("saved safe-list edits not read at start: read once redis answers");
            }
            app.catch_up().await;
            fleet_from = Some((fleet, loaded));
        }
        let app = Arc::new(app);
        let policy = app.policy();
        let listen = &policy.config().listen;
        let opts = ServerOptions {
            max_connections: listen.max_connections,
            max_per_ip: listen.max_connections_per_ip,
            header_timeout: listen.header_timeout,
            idle_timeout: listen.idle_timeout,
            drain_timeout: listen.drain_timeout,
            tls,
            stats: app.listener.clone(),
        };
        let opts_tls = opts.tls.is_some();
        let (stop, stopped) = oneshot::channel::<()>();
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let admin_addr = match &app.policy().config().admin {
            None => None,
            Some(admin) => {
                let auth = crate::admin::Auth::from_config(admin)?;
                let listener = TcpListener::bind(admin.addr)
                    .await
                    .map_err(|e| format!("cannot listen on admin.addr {}: {e}", admin.addr))?;
                let admin_addr = listener.local_addr().map_err(|e| e.to_string())?;
                let auth = auth.bound_to(admin_addr);
                let (a, mut stopped) = (app.clone(), admin_stopped.clone());
                let admin_opts = ServerOptions {
                    tls: None,
                    ..opts.clone()
                };
                tokio::spawn(server::run(
                    listener,
                    admin_opts,
                    move |req, _conn| crate::admin::handle(a.clone(), auth.clone(), req),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                ));
                Some(admin_addr)
            }
        };
        if let Some((fleet, mut safe_loaded)) = fleet_from {
            let (a, mut stopped) = (app.clone(), admin_stopped.clone());
            let every = a
                .policy()
                .config()
                .store
                .near_cache
                .max(std::time::Duration::from_millis(10));
            // This replica's activity, for the fleet's dashboard.
            let (sa, mut sstopped, sfleet) = (app.clone(), admin_stopped.clone(), fleet.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
                loop {
                    let stop = tokio::select! {
                        _ = tick.tick() => false,
                        _ = sstopped.wait_for(|s| *s) => true,
                    };
                    if stop {
                        let _ = sfleet.drop_summary(&sfleet.id).await;
                        return;
                    }
                    let s = sa.watch.activity.summary(sa.clock.now());
                    if let Ok(json) = serde_json::to_string(&s) {
                        let _ = sfleet.save_summary(&json).await;
                    }
                }
            });
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    if !safe_loaded {
                        // Redis was down at start: the saved edits now.
                        safe_loaded = load_safe_edits(&a, &fleet).await;
                    }
                    a.catch_up().await;
                }
            });
        }
        if let Some(shared) = &app.shared {
            shared.start_sync(app.clock.clone(), admin_stopped.clone());
            // A change of Redis's health is told to the alerts.
            let (a, mut stopped) = (app.clone(), admin_stopped.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = health_rx.changed() => if r.is_err() { return },
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    let h = health_rx.borrow_and_update().clone();
                    if let Some(alerts) = &a.watch.alerts {
                        alerts.store_health(&h, a.policy().config().store.on_error, a.clock.now());
                    }
                }
            });
        }
        if app.watch.alerts.is_some() {
            // Spikes and spend are checked on a timer, decisions on arrival.
            let (a, mut stopped) = (app.clone(), admin_stopped.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    let now = a.clock.now();
                    let spent = a
                        .policy()
                        .budget_status(now)
                        .into_iter()
                        .find(|(n, _, _)| n == "day:*")
                        .map(|(_, s, _)| s);
                    if let Some(alerts) = &a.watch.alerts {
                        alerts.check(&a.watch.activity, spent, now);
                    }
                }
            });
        }
        if let Some(r) = &app.reconcile {
            // Twilio's lists against the sends forwarded, every interval.
            tokio::spawn(r.clone().run(app.clone(), admin_stopped.clone()));
        }
        let handler_app = app.clone();
        let task = tokio::spawn(server::run(
            listener,
            opts,
            move |req, conn| egress::handle(handler_app.clone(), interceptor.clone(), req, conn),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Guard {
            addr,
            admin_addr,
            admin_stop,
            tls: opts_tls,
            app,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets in-flight requests finish (bounded by the drain
    /// timeout), and returns when the server is done.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.admin_stop.send(true);
        let _ = (&mut self.task).await;
    }

    /// Resolves when the server stops on its own (it only does when told).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}
