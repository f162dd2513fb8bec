//! The scripted fake API server: `GET /api/v1/nodes` list and watch.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, Infallible>;

/// A fake Kubernetes API server for Nodes on `127.0.0.1:<free port>`; stops on drop.
/// See the [module docs](super).
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<Message>,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<String, Node>,
    resource_version: u64,
    /// Every event so far, for watches that resume from an older resource version.
    log: Vec<(u64, Bytes)>,
    /// Watches from a resource version below this get `410 Gone`.
    oldest_watchable: u64,
    failing_lists: usize,
    lists: usize,
    watches: usize,
}

#[derive(Debug, Clone)]
enum Message {
    Event(u64, Bytes),
    Expire,
    End,
}

impl FakeApiServer {
    /// Starts serving with `nodes` already present.
    pub async fn start(nodes: impl IntoIterator<Item = Node>) -> std::io::Result<FakeApiServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(1024);
        let mut state = State {
            resource_version: 1,
            ..State::default()
        };
        for mut node in nodes {
            state.resource_version += 1;
            node.metadata.resource_version = Some(state.resource_version.to_string());
            state.nodes.insert(name_of(&node), node);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            events,
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), shutdown.clone()));
        Ok(FakeApiServer {
            addr,
            shared,
            shutdown,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        let uri = http::Uri::from_maybe_shared(self.url())
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        kube::Client::try_from(kube::Config::new(uri))
    }

    /// Writes a kubeconfig pointing at this server, for `spegel-bootstrapper --kubeconfig`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let url = self.url();
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
            ),
        )
    }

    /// Adds or replaces a Node; open watches see `ADDED` or `MODIFIED`.
    pub fn apply(&self, mut node: Node) {
        let mut state = self.lock();
        state.resource_version += 1;
        let rv = state.resource_version;
        node.metadata.resource_version = Some(rv.to_string());
        let kind = if state.nodes.contains_key(&name_of(&node)) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let line = event_line(kind, &node);
        state.nodes.insert(name_of(&node), node);
        self.publish(&mut state, rv, line);
    }

    /// Removes a Node; open watches see `DELETED`.
    pub fn delete(&self, name: &str) {
        let mut state = self.lock();
        let Some(mut node) = state.nodes.remove(name) else {
            return;
        };
        state.resource_version += 1;
        let rv = state.resource_version;
        node.metadata.resource_version = Some(rv.to_string());
        let line = event_line("DELETED", &node);
        self.publish(&mut state, rv, line);
    }

    /// Replaces every Node without telling open watches, as if their events were lost; only
    /// a new LIST shows the change.
    pub fn replace_quietly(&self, nodes: impl IntoIterator<Item = Node>) {
        let mut state = self.lock();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        state.nodes = nodes
            .into_iter()
            .map(|mut node| {
                node.metadata.resource_version = Some(rv.clone());
                (name_of(&node), node)
            })
            .collect();
    }

    /// Ends every open watch with an `ERROR` event carrying `410 Gone`, and refuses watches
    /// from any older resource version the same way: the client must LIST again.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        state.oldest_watchable = state.resource_version;
        state.log.clear();
        let _no_watchers = self.shared.events.send(Message::Expire);
    }

    /// Ends every open watch cleanly, as the API server does when `timeoutSeconds` passes:
    /// the client watches again from the resource version it holds.
    pub fn end_watches(&self) {
        let _no_watchers = self.shared.events.send(Message::End);
    }

    /// The next `count` LISTs answer `500 Internal Server Error`.
    pub fn fail_lists(&self, count: usize) {
        self.lock().failing_lists = count;
    }

    /// LISTs answered successfully so far.
    pub fn lists(&self) -> usize {
        self.lock().lists
    }

    /// WATCHes started so far.
    pub fn watches(&self) -> usize {
        self.lock().watches
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn publish(&self, state: &mut State, rv: u64, line: Bytes) {
        state.log.push((rv, line.clone()));
        let _no_watchers = self.shared.events.send(Message::Event(rv, line));
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let watches_stop = shutdown.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let response = answer(&request, &shared, &watches_stop);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Response<Body> {
    if request.uri().path() != "/api/v1/nodes" {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the fake API server serves Nodes only",
        );
    }
    let query: BTreeMap<&str, &str> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    if matches!(query.get("watch"), Some(&"true" | &"1")) {
        let from = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        watch(shared, from, shutdown.clone())
    } else {
        list(shared)
    }
}

fn list(shared: &Shared) -> Response<Body> {
    let mut state = shared.lock();
    if state.failing_lists > 0 {
        state.failing_lists -= 1;
        return status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "scripted list failure",
        );
    }
    state.lists += 1;
    let body = json!({
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": state.resource_version.to_string() },
        "items": state.nodes.values().collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// Streams events after resource version `from`, live, until expired or shut down.
fn watch(shared: &Shared, from: u64, shutdown: CancellationToken) -> Response<Body> {
    let (lines, receiver) = mpsc::channel::<Bytes>(64);
    let mut state = shared.lock();
    state.watches += 1;
    if from < state.oldest_watchable {
        let rv = state.resource_version;
        drop(state);
        let _ = lines.try_send(gone_line(from, rv));
        return streaming_response(receiver);
    }
    let backlog: Vec<Bytes> = state
        .log
        .iter()
        .filter(|(rv, _)| *rv > from)
        .map(|(_, line)| line.clone())
        .collect();
    let mut events = shared.events.subscribe();
    let current = state.resource_version;
    drop(state);
    tokio::spawn(async move {
        for line in backlog {
            if lines.send(line).await.is_err() {
                return;
            }
        }
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                () = lines.closed() => return,
                message = events.recv() => message,
            };
            let line = match message {
                Ok(Message::Event(rv, line)) if rv > from => line,
                Ok(Message::Event(..)) => continue,
                Ok(Message::Expire) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = lines.send(gone_line(from, current)).await;
                    return;
                }
                Ok(Message::End) | Err(broadcast::error::RecvError::Closed) => return,
            };
            if lines.send(line).await.is_err() {
                return;
            }
        }
    });
    streaming_response(receiver)
}

fn streaming_response(receiver: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), receiver))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn event_line(kind: &str, node: &Node) -> Bytes {
    let mut line = json!({ "type": kind, "object": node }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn gone_line(from: u64, current: u64) -> Bytes {
    let mut line = json!({
        "type": "ERROR",
        "object": status_body(410, "Expired", &format!("too old resource version: {from} ({current})")),
    })
    .to_string();
    line.push('\n');
    Bytes::from(line)
}

fn status_body(code: u16, reason: &str, message: &str) -> serde_json::Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = status_body(status.as_u16(), reason, message).to_string();
    json_response(status, Bytes::from(body))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn name_of(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}
