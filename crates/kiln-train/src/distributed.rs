//! Training across machines with burn's remote backend (feature `distributed`): a worker serves
//! its CPU (flex) device over WebSocket, and a trainer given `--devices ws://host:port,…` runs
//! its multi-device step on those remote devices, the gradients gathered on the first.

use crate::TrainError;
use burn::tensor::Device;

/// Serves this machine's CPU device to remote trainers on `listener` (bind it to loopback
/// unless other machines must reach it) until the returned future is dropped. Needs a Tokio
/// runtime; installs no logging or signal handlers (the caller owns those).
pub fn serve_worker(
    listener: std::net::TcpListener,
) -> impl std::future::Future<Output = Result<(), TrainError>> + Send + 'static {
    let serving = burn::server::RemoteServer::new([Device::flex()])
        .serve_async(burn::server::WebSocketTransport::from_listener(listener));
    async move {
        serving
            .await
            .map_err(|e| TrainError::Config(format!("the worker stopped: {e}")))
    }
}

/// Connects a remote device at `url` (`ws://host:port`), ready for training.
pub fn connect(url: &str) -> Result<Device, TrainError> {
    let host = burn::tensor::remote::RemoteHost::websocket(url);
    Device::remote_options(&host)
        .init()
        .map(Device::autodiff)
        .map_err(|e| {
            TrainError::Config(format!(
                "cannot reach the worker at {url} ({e}); start it there with `kiln worker --listen <addr:port>`"
            ))
        })
}
