//! maasd's HTTPS listener: the REST face under `/v1/` ([`crate::rest`]) and the console
//! under `/ui/` ([`crate::console`]), over TLS with the same certificates and client-CA as
//! the gRPC listener. Each connection's client certificate is read once, at the handshake,
//! and every request on it is served as that certificate's principal, through the same
//! policy as gRPC.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use maas_core::authz::Principal;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::Status;
use tower::ServiceExt;

use crate::console::Console;
use crate::rest::Rest;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The DER client certificate a connection presented (none on plaintext).
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<Arc<[u8]>>);

#[derive(Clone)]
struct App {
    rest: Rest,
    console: Console,
}

impl App {
    fn caller(&self, request: &Request) -> Result<Principal, Status> {
        let peer = request.extensions().get::<PeerCertificate>().and_then(|p| p.0.clone());
        self.rest.service().principal_of_peer(peer.as_deref())
    }
}

/// The router: `/v1/...` REST, `/ui/...` the console, `/` to the console.
pub fn router(rest: Rest) -> Router {
    let console = Console::new(rest.clone());
    let app = App { rest, console };
    Router::new().route("/", axum::routing::get(|| async { Redirect::to("/ui/") })).fallback(dispatch).with_state(app)
}

async fn dispatch(State(app): State<App>, request: Request) -> Response {
    let caller = app.caller(&request);
    let path = request.uri().path();
    if path.starts_with("/v1/") {
        app.rest.handle(request, caller).await
    } else if path == "/ui" || path.starts_with("/ui/") {
        app.console.handle(request, caller).await
    } else {
        crate::rest::error(&Status::not_found(format!("no page {path} (the console is at /ui/, the API at /v1/)")))
            .into_response()
    }
}

/// Serves `app` on `listener` until `shutdown` completes: over TLS with `tls` (client
/// certificates as it requires them), or plaintext when `None` (loopback development).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait a little instead of spinning.
                    tracing::warn!(error = %e, "https: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "https: handshake refused"),
                        Err(_) => return tracing::debug!(%remote, "https: handshake timed out"),
                    };
                    let leaf =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::from(c.as_ref()));
                    connection(TokioIo::new(tls), app, PeerCertificate(leaf)).await;
                }
                None => connection(TokioIo::new(stream), app, PeerCertificate(None)).await,
            }
        });
    }
    connections.abort_all();
}

async fn connection<I>(io: I, app: Router, peer: PeerCertificate)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer.clone());
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let served = auto::Builder::new(TokioExecutor::new()).serve_connection(io, TowerToHyperService::new(service)).await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "https: connection ended with an error");
    }
}
