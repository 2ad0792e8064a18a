//! The gRPC server as `maasd` runs it: the `Maas` service with its request size limit,
//! grpc.health.v1, server reflection (v1 and v1alpha), and per-RPC metrics, over mTLS (or plaintext).

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;

use crate::metrics::RpcMetricsLayer;
use crate::pb::maas_server::MaasServer;
use crate::service::MaasService;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS settings were refused.
    #[error("TLS: {0}")]
    Tls(tonic::transport::Error),
    /// Reflection could not load the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The server failed.
    #[error("{0}")]
    Transport(tonic::transport::Error),
}

/// Serves `service` on `listener` until `shutdown` completes. Requests larger than
/// `max_message_bytes` are refused with `OUT_OF_RANGE` naming the limit.
pub async fn serve(
    listener: TcpListener,
    service: MaasService,
    tls: Option<ServerTlsConfig>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<MaasServer<MaasService>>().await;
    // Reflection in both versions: grpcurl and older tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).map_err(ServeError::Tls)?;
    }
    server
        .layer(RpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(MaasServer::new(service).max_decoding_message_size(max_message_bytes))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport)
}
