//! Wiring: the only place that knows every component. [`Server::start`] opens the store,
//! migrates it, loads NAS clients, rebuilds the index, binds the sockets and spawns the
//! tasks (among them the background EnsureIndexes of the API's indexes);
//! [`Server::stop`] shuts them down in order: stop ingest → let the writer commit and
//! answer everything it accepted → stop background jobs → drain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::ingest::{Clients, Dedup, Listener, Responder};
use crate::radius::Dictionary;
use crate::sessions::engine::Change;
use crate::sessions::store::Store;
use crate::sessions::writer::Writer;
use crate::sessions::{Engine, Index};

/// A running server.
pub struct Server {
    pub radius_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: Store,
    pub index: Arc<Index>,
    /// Committed session changes (the live stream's source).
    pub changes: broadcast::Sender<Arc<Change>>,
    /// The HTTP API's state, so tests can drive `api::router(state)` without a socket.
    pub api: api::AppState,
    shutdown: CancellationToken,
    supervisor: JoinHandle<()>,
}

impl Server {
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let dictionary = Arc::new(load_dictionary(&config)?);

        let store = Store::connect(&config.database)
            .await
            .context("cannot open the database")?;
        // Schema and the indexes ingest needs; the API's indexes follow in the background.
        store
            .migrate_for_ingest()
            .await
            .context("cannot migrate the database")?;
        for nas in &config.nas {
            store
                .nas_upsert(nas)
                .await
                .with_context(|| format!("cannot store NAS {} from the config file", nas.name))?;
        }

        let clients = Arc::new(Clients::default());
        load_clients(&store, &clients, config.radius.default_client).await?;
        warn_unpinned_api_tls(&store).await;

        let index = Arc::new(Index::new());
        let engine = Engine::new(
            store.clone(),
            Arc::clone(&index),
            config.radius.session_start_tolerance.as_secs() as i64,
        );
        let started = Instant::now();
        let open = engine
            .rebuild_index()
            .await
            .context("cannot load open sessions")?;
        tracing::info!(
            open,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index rebuilt"
        );
        crate::metrics::open_sessions(open);

        let socket = Arc::new(bind_udp(
            config.radius.listen,
            config.radius.recv_buffer_bytes,
        )?);
        let radius_addr = socket.local_addr()?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
        let http_addr = http.local_addr()?;

        let metrics = crate::metrics::install();
        let dedup = Arc::new(Dedup::new(config.radius.duplicate_window));
        let (queue_tx, queue_rx) = mpsc::channel(config.writer.queue_capacity);
        let closer: Arc<dyn crate::sessions::writer::Closer> =
            Arc::new(crate::sessions::writer::Submitter {
                queue: queue_tx.clone(),
            });
        let (changes, _) = broadcast::channel(4096);

        let shutdown = CancellationToken::new();
        let jobs = CancellationToken::new();
        let http_stop = CancellationToken::new();

        let (responder, responder_task) = Responder::spawn(Arc::clone(&socket), Arc::clone(&dedup));
        let writer = Writer::new(
            engine,
            queue_rx,
            responder,
            config.writer.clone(),
            changes.clone(),
        );
        let drain = CancellationToken::new();
        let writer_task = tokio::spawn(writer.run(shutdown.clone(), drain.clone()));

        let listener = Listener {
            socket: Arc::clone(&socket),
            clients: Arc::clone(&clients),
            dedup: Arc::clone(&dedup),
            dictionary: Arc::clone(&dictionary),
            skew_secs: config.radius.event_timestamp_skew.as_secs() as i64,
            queue: queue_tx,
        };
        let listener_task = tokio::spawn(listener.run(shutdown.clone()));

        let mut job_tasks = tokio::task::JoinSet::new();
        job_tasks.spawn(reload_clients(
            store.clone(),
            Arc::clone(&clients),
            config.radius.default_client,
            config.radius.nas_reload,
            jobs.clone(),
        ));
        if config.jobs.sweeper {
            job_tasks.spawn(
                crate::jobs::sweeper::Sweeper {
                    store: store.clone(),
                    index: Arc::clone(&index),
                    closer: closer.clone(),
                    interval: config.jobs.sweep_interval,
                    stale_after: config.jobs.stale_after,
                }
                .run(jobs.clone()),
            );
        }
        if config.jobs.archiver {
            job_tasks.spawn(
                crate::jobs::archiver::Archiver {
                    store: store.clone(),
                    at: config.jobs.archive_at,
                    after: config.jobs.archive_after,
                    batch_size: config.jobs.archive_batch_size,
                }
                .run(jobs.clone()),
            );
        }
        job_tasks.spawn(ensure_api_indexes(store.clone(), jobs.clone()));
        job_tasks.spawn(purge_dedup(
            Arc::clone(&dedup),
            config.radius.duplicate_window,
            jobs.clone(),
        ));

        let verifier = crate::api::auth::Verifier::from_config(&config)
            .context("cannot load the JWT key")?
            .map(Arc::new);
        if verifier.is_none() {
            tracing::warn!(
                "no JWT key configured (auth.jwt_secret / RADACCTD_JWT_SECRET): the Sessions \
                 API refuses every request"
            );
        }
        let limiter = Arc::new(crate::api::ratelimit::RateLimiter::new(
            config.http.rate_limit_per_minute,
            config.http.trusted_proxies.clone(),
        ));
        job_tasks.spawn(purge_rate_limits(Arc::clone(&limiter), jobs.clone()));
        let api_state = api::AppState {
            store: store.clone(),
            index: Arc::clone(&index),
            metrics,
            verifier,
            limiter,
            changes: changes.clone(),
            limits: api::Limits::default(),
            disconnector: Arc::new({
                let mut d = crate::coa::Disconnector::new(
                    store.clone(),
                    Arc::clone(&dictionary),
                    Arc::clone(&closer),
                );
                d.default_client = config.radius.default_client;
                d
            }),
            closer,
            streams: CancellationToken::new(),
            stream_tasks: tokio_util::task::TaskTracker::new(),
            export_slots: Arc::new(tokio::sync::Semaphore::new(
                config.http.max_concurrent_exports,
            )),
        };
        let app = api::router(api_state.clone());
        let metrics_task = match config.http.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?;
                let app = api::metrics_router(api_state.clone());
                let stop = http_stop.clone();
                Some(tokio::spawn(async move {
                    let serve = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "metrics listener failed");
                    }
                }))
            }
            None => None,
        };
        let http_shutdown = http_stop.clone();
        let http_task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let serve = axum::serve(http, app)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });

        tracing::info!(%radius_addr, %http_addr, backend = store.backend(), "radacctd started");

        let supervisor_store = store.clone();
        let streams = api_state.streams.clone();
        let stream_tasks = api_state.stream_tasks.clone();
        let supervisor_shutdown = shutdown.clone();
        let supervisor = tokio::spawn(async move {
            supervisor_shutdown.cancelled().await;
            tracing::info!("shutting down: stopping ingest");
            let _ = listener_task.await;
            drain.cancel();
            let _ = writer_task.await;
            // The writer is gone and with it the responder: its task sends what is left.
            let _ = responder_task.await;
            tracing::info!("writer drained; stopping jobs");
            // Live streams get their `disconnect` message before the process goes.
            streams.cancel();
            stream_tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(2), stream_tasks.wait()).await;
            jobs.cancel();
            while job_tasks.join_next().await.is_some() {}
            http_stop.cancel();
            let _ = http_task.await;
            if let Some(t) = metrics_task {
                let _ = t.await;
            }
            // A connection whose commit the writer abandoned at the shutdown deadline may
            // still wait on a PostgreSQL lock; closing the pool waits for every connection,
            // so it gets a bound (nothing acknowledged depends on it).
            if tokio::time::timeout(Duration::from_secs(5), supervisor_store.close())
                .await
                .is_err()
            {
                tracing::warn!("database connections still busy after 5 s; exiting anyway");
            }
            tracing::info!("shutdown complete");
        });

        Ok(Server {
            radius_addr,
            http_addr,
            store,
            index,
            changes,
            api: api_state,
            shutdown,
            supervisor,
        })
    }

    /// A token that stops the server when cancelled (signal handlers use it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stop and wait until everything accepted has been committed and answered.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.supervisor.await;
    }

    /// Wait until the server has stopped (after its shutdown token was cancelled).
    pub async fn wait(self) {
        let _ = self.supervisor.await;
    }
}

fn load_dictionary(config: &Config) -> anyhow::Result<Dictionary> {
    let dict = match &config.radius.dictionary_dir {
        Some(dir) => Dictionary::load_dir(dir),
        None => Dictionary::embedded(),
    }
    .context("cannot load the RADIUS dictionary")?;
    tracing::debug!(attributes = dict.len(), "dictionary loaded");
    Ok(dict)
}

async fn load_clients(
    store: &Store,
    clients: &Clients,
    default_client: bool,
) -> anyhow::Result<()> {
    let rows = store
        .nas_list()
        .await
        .context("cannot read the nas table")?;
    let (map, default_in_use) = Clients::build(&rows, default_client);
    if default_in_use {
        tracing::warn!(
            "the default NAS client 127.0.0.1 with secret 'testing123' is active; add your \
             NAS clients and set radius.default_client = false in production"
        );
    }
    clients.replace(map);
    Ok(())
}

/// Once at start: a NAS whose RouterOS API-SSL certificate is not pinned can be
/// impersonated by an active man in the middle, who would receive the API password.
async fn warn_unpinned_api_tls(store: &Store) {
    let Ok(rows) = store.nas_list().await else {
        return;
    };
    for r in rows {
        let c = &r.config;
        if c.api_tls && c.api_tls_fingerprint.is_none() && c.api_password.is_some() {
            tracing::warn!(
                nas = %c.name,
                "RouterOS API-SSL without api_tls_fingerprint: the router's certificate is not \
                 verified; pin it (radacctd nas add --api-tls-fingerprint) so the API password \
                 cannot be taken by an impostor"
            );
        }
    }
}

/// Pick up `radacctd nas add/remove` made while running.
async fn reload_clients(
    store: Store,
    clients: Arc<Clients>,
    default_client: bool,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.nas_list().await {
            Ok(rows) => {
                let (map, _) = Clients::build(&rows, default_client);
                clients.replace(map);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot reload NAS clients; keeping the old list")
            }
        }
    }
}

/// Attempts of the background EnsureIndexes, and the pause after a failed one.
const ENSURE_INDEXES_ATTEMPTS: u32 = 5;
const ENSURE_INDEXES_RETRY: Duration = Duration::from_secs(30);

/// EnsureIndexes for the Sessions API, once, in the background while ingest runs: a
/// failure (another node building at the same time, the database away) is logged and
/// retried a few times; it never stops the server, which only answers closed-session
/// queries more slowly until the indexes exist.
async fn ensure_api_indexes(store: Store, stop: CancellationToken) {
    for attempt in 1..=ENSURE_INDEXES_ATTEMPTS {
        let started = Instant::now();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = store.ensure_api_indexes() => r,
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "API indexes ensured"
                );
                return;
            }
            Err(e) if attempt < ENSURE_INDEXES_ATTEMPTS => tracing::warn!(
                error = %e,
                attempt,
                retry_in_secs = ENSURE_INDEXES_RETRY.as_secs(),
                "cannot ensure the API indexes; retrying"
            ),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot ensure the API indexes; giving up until the next start \
                     (`radacctd migrate` builds them too)"
                );
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ENSURE_INDEXES_RETRY) => {}
        }
    }
}

async fn purge_rate_limits(
    limiter: Arc<crate::api::ratelimit::RateLimiter>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => limiter.purge(Instant::now()),
        }
    }
}

async fn purge_dedup(dedup: Arc<Dedup>, window: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(window.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => dedup.purge(Instant::now()),
        }
    }
}

/// Bind the accounting socket with a large receive buffer, so that a burst of requests
/// waits in the kernel rather than being dropped there.
fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(recv_buffer) {
        tracing::warn!(error = %e, "cannot set the UDP receive buffer size");
    }
    let actual = socket.recv_buffer_size().unwrap_or(0);
    if actual < recv_buffer {
        tracing::warn!(
            requested = recv_buffer,
            actual,
            "UDP receive buffer is smaller than configured; raise net.core.rmem_max"
        );
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("cannot listen for RADIUS on {addr}"))?;
    Ok(UdpSocket::from_std(socket.into())?)
}
