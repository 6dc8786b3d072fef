//! The client side of the control API: a gRPC channel over the daemon's Unix socket.

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rswarm_proto::pb::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint};

pub const DEFAULT_HOST: &str = "unix:///run/rswarm/rswarm.sock";

pub async fn connect(host: &str) -> anyhow::Result<ControlClient<Channel>> {
    let path = host
        .strip_prefix("unix://")
        .with_context(|| {
            format!("unsupported host {host:?}: expected unix:///path/to/rswarm.sock")
        })?
        .to_owned();
    let p = path.clone();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://rswarm.sock")?
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .map_err(|_| {
            anyhow::anyhow!("cannot connect to the rswarm daemon at {path}: is it running?")
        })?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES))
}

/// One line for the user: a gRPC status shows its message only; other errors their chain.
pub fn error_line(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return status_line(s);
    }
    let mut parts = Vec::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<tonic::Status>() {
            Some(s) => status_line(s),
            None => cause.to_string(),
        };
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

fn status_line(s: &tonic::Status) -> String {
    let msg = s.message().trim();
    if msg.is_empty() {
        format!("{:?}", s.code()).to_lowercase()
    } else {
        msg.replace('\n', " ")
    }
}
