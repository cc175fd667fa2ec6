//! The admin listener: /healthz, /readyz, /metrics, JSON views of what is served
//! (/routes, /certificates, /ingresses), and the status page at / that draws them.

use std::{convert::Infallible, sync::atomic::Ordering, sync::Arc};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    admin_page, admin_views,
    state::{Drain, Live},
};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    live: Arc<Live>,
    drain: Arc<Drain>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (live, drain) = (live.clone(), drain.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&live, &drain, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(live: &Live, drain: &Drain, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if drain.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/routes" => json(&admin_views::routes(&live.snapshot.load())),
        "/certificates" => json(&admin_views::certificates(
            &live.snapshot.load(),
            std::time::SystemTime::now(),
        )),
        "/ingresses" => match live.ingresses_view.load_full() {
            Some(view) => json_text(view.as_str().to_owned()),
            None => text(
                StatusCode::NOT_FOUND,
                "no Ingresses: Gatehouse runs without --kubernetes\n",
            ),
        },
        "/metrics" => {
            let (content_type, body) = live.metrics.encode();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            if let Ok(v) = content_type.parse() {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        path => admin_page::file(path).unwrap_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                "try / (the status page), /healthz, /readyz, /metrics, /routes, /certificates or /ingresses\n",
            )
        }),
    }
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    json_text(serde_json::to_string_pretty(value).unwrap_or_default() + "\n")
}

fn json_text(body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
