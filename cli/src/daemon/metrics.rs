//! `--metrics-addr`: Prometheus metrics over plain HTTP at `/metrics`, with the names of
//! Docker's swarm metrics (`swarm_node_*`, `swarm_manager_*`) so that existing dashboards
//! and alerts work. Every scrape reads the node's state afresh (cheap: counts over the
//! store's in-memory view on managers); nothing is kept between scrapes.
use super::node::NodeRuntime;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// What a scrape reports; filled by [`NodeRuntime::metrics`].
#[derive(Debug, Default)]
pub struct Snapshot {
    pub node_id: String,
    pub cluster_id: String,
    pub manager: bool,
    /// Set on managers only.
    pub store: Option<StoreCounts>,
}

#[derive(Debug, Default)]
pub struct StoreCounts {
    pub leader: bool,
    pub nodes_by_state: Vec<(&'static str, i64)>,
    pub tasks_by_state: Vec<(&'static str, i64)>,
    pub services: i64,
    pub networks: i64,
    pub secrets: i64,
    pub configs: i64,
}

type Labels = Vec<(String, String)>;

fn gauge(reg: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    reg.register(name, help, g);
}

fn family(reg: &mut Registry, name: &str, help: &str, label: &str, values: &[(&str, i64)]) {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in values {
        f.get_or_create(&vec![(label.to_owned(), (*l).to_owned())])
            .set(*v);
    }
    reg.register(name, help, f);
}

/// The exposition text of one snapshot.
pub fn render(s: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        ("node_id".to_owned(), s.node_id.clone()),
        ("swarm_id".to_owned(), s.cluster_id.clone()),
    ])
    .set(1);
    reg.register("swarm_node_info", "Information about the swarm node", info);
    gauge(
        &mut reg,
        "swarm_node_manager",
        "Whether this node is a manager or not",
        i64::from(s.manager),
    );
    if let Some(c) = &s.store {
        gauge(
            &mut reg,
            "swarm_manager_leader",
            "Indicates if this manager node is a leader",
            i64::from(c.leader),
        );
        family(
            &mut reg,
            "swarm_manager_nodes",
            "The number of nodes",
            "state",
            &c.nodes_by_state,
        );
        family(
            &mut reg,
            "swarm_manager_tasks",
            "The number of tasks in the cluster object store",
            "state",
            &c.tasks_by_state,
        );
        gauge(
            &mut reg,
            "swarm_manager_services",
            "The number of services in the cluster object store",
            c.services,
        );
        gauge(
            &mut reg,
            "swarm_manager_networks",
            "The number of networks in the cluster object store",
            c.networks,
        );
        gauge(
            &mut reg,
            "swarm_manager_secrets",
            "The number of secrets in the cluster object store",
            c.secrets,
        );
        gauge(
            &mut reg,
            "swarm_manager_configs",
            "The number of configs in the cluster object store",
            c.configs,
        );
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, runtime: Arc<NodeRuntime>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("metrics: accept: {e}");
                continue;
            }
        };
        let rt = runtime.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let rt = rt.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&rt, &req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                debug!(%peer, "metrics connection: {e}");
            }
        });
    }
}

async fn answer(rt: &NodeRuntime, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".into(),
        );
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match render(&rt.metrics().await) {
        Ok(text) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_swarm_names_with_labels() {
        let s = Snapshot {
            node_id: "n1".into(),
            cluster_id: "c1".into(),
            manager: true,
            store: Some(StoreCounts {
                leader: true,
                nodes_by_state: vec![("ready", 3), ("down", 1)],
                tasks_by_state: vec![("running", 5)],
                services: 2,
                ..Default::default()
            }),
        };
        let text = render(&s).expect("renders");
        for want in [
            "swarm_node_info{node_id=\"n1\",swarm_id=\"c1\"} 1",
            "swarm_node_manager 1",
            "swarm_manager_leader 1",
            "swarm_manager_nodes{state=\"ready\"} 3",
            "swarm_manager_nodes{state=\"down\"} 1",
            "swarm_manager_tasks{state=\"running\"} 5",
            "swarm_manager_services 2",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        let worker = render(&Snapshot::default()).expect("renders");
        assert!(!worker.contains("swarm_manager_"), "{worker}");
    }
}
