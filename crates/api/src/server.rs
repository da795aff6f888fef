//! The HTTP server of every role: the axum router on hyper's HTTP/1 connection, with the bounds
//! `axum::serve` lacks (it sets no timer, so hyper's header read timeout never runs):
//!
//! - a request's head must arrive within `header_timeout`, counted from the connection's opening
//!   or the end of the previous response (so it also closes idle keep-alive connections);
//! - a connection on which no byte moves either way for `idle_timeout` is closed (a stalled
//!   upload, a stream whose reader stopped reading), checked a few times per timeout, so it may
//!   stay up to a quarter of it longer;
//! - at most `max_connections` are served at once. Beyond, like nginx's `limit_conn`, a few more
//!   are answered once: health, readiness and metrics normally, anything else 503 with
//!   `Retry-After`; past those the socket is closed at once.

use crate::ApiError;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

/// Connections beyond `max_connections` that are still answered (health, or a 503).
const OVERFLOW: usize = 64;
/// How long an overflow connection may take to send its one request.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Paths an overflow connection is still served, so that probes see a live process.
const ALWAYS_SERVED: [&str; 3] = ["/_healthcheck", "/readyz", "/metrics"];
pub const REFUSED: &str = "bourse_http_refused_total";

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    metrics::describe_counter!(
        REFUSED,
        "Connections (what=connection) and event streams (what=stream) refused over their limit"
    );
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max));
    let overflow = Arc::new(Semaphore::new(OVERFLOW));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            peer,
            limits,
            // A token of its own: polling the shared one from every connection would make them
            // all take its lock on every wake-up.
            shutdown: shutdown.child_token(),
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            tokio::spawn(conn.run(app.clone(), false, permit));
            continue;
        }
        metrics::counter!(REFUSED, "what" => "connection").increment(1);
        if let Ok(permit) = overflow.clone().try_acquire_owned() {
            let app = app.clone();
            let busy = tower::service_fn(move |req: Request| {
                let app = app.clone();
                async move {
                    if ALWAYS_SERVED.contains(&req.uri().path()) {
                        app.oneshot(req).await
                    } else {
                        Ok::<_, Infallible>(too_many_connections())
                    }
                }
            });
            tokio::spawn(conn.run(busy, true, permit));
        }
        // Else the stream is dropped: closed at once.
    }
    drop(listener);
    // Every permit back means every connection has ended.
    let _ = slots.acquire_many(max as u32).await;
    let _ = overflow.acquire_many(OVERFLOW as u32).await;
    Ok(())
}

fn too_many_connections() -> Response {
    ApiError::Busy {
        message: "too many connections; retry shortly".into(),
        retry_after: 1,
    }
    .into_response()
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    limits: HttpLimits,
    shutdown: CancellationToken,
}

impl Conn {
    /// Serves one connection; an overflow connection answers one request and closes.
    async fn run<S>(self, app: S, overflow: bool, _permit: OwnedSemaphorePermit)
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let peer = self.peer;
        let service = app.map_request(move |mut req: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` would add: the peer address.
            req.extensions_mut().insert(ConnectInfo(peer));
            req.map(Body::new)
        });
        let moved = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Watched {
            inner: self.stream,
            moved: moved.clone(),
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new());
        if overflow {
            http.keep_alive(false)
                .header_read_timeout(OVERFLOW_HEADER_TIMEOUT.min(self.limits.header_timeout));
        } else {
            http.header_read_timeout(self.limits.header_timeout);
        }
        let mut conn = pin!(http
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades());
        let idle = self.limits.idle_timeout;
        // Quiet since this instant, as last seen by a check (one per quarter of the timeout).
        let mut quiet_since = Instant::now();
        let mut closing = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    break;
                }
                _ = self.shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep(idle / 4), if !idle.is_zero() => {
                    if moved.swap(false, Ordering::Relaxed) {
                        quiet_since = Instant::now();
                    } else if quiet_since.elapsed() >= idle {
                        tracing::debug!(%peer, "closing an idle connection");
                        break;
                    }
                }
            }
        }
    }
}

/// A stream that notes that a byte moved (a flag, not a clock read, on every read and write).
struct Watched {
    inner: TcpStream,
    moved: Arc<AtomicBool>,
}

impl Watched {
    fn moved(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
