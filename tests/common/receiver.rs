//! A local HTTP endpoint on 127.0.0.1 that records every request it gets:
//! an alert webhook, an app's `StatusCallback` URL. It answers 200, or 500
//! to the first `fail_first` requests (which it does not record), and stops
//! with the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One request the receiver recorded.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query, as requested.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body's form fields, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let (g, seen) = (g.clone(), seen.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (g, seen) = (g.clone(), seen.clone());
                        async move {
                            let uri = req.uri().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let status = if n < fail_first {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                g.lock().unwrap().push(Received { uri, headers, body });
                                StatusCode::OK
                            };
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Receiver { addr, got, task }
    }

    /// The URL of `path` (with its query) on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it recorded so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The bodies recorded so far that are JSON.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.received().iter().filter_map(Received::json).collect()
    }

    /// What it recorded once it has `n` requests, or after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let now = self.received();
            if now.len() >= n || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
