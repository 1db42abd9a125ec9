//! The HTTP routes and their handlers. Handlers read the body under the
//! limits ([`body`](super::body)), decode or parse on tokio's blocking pool,
//! push the pixels to the model's queue and await the batcher's answer; none
//! touches a session. A middleware counts every request by model, route and
//! status, tracks requests in flight, logs a line per request at debug and
//! enforces the per-request deadline (504).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::body::{decode_image, read_body};
use super::error::ApiError;
use super::metrics::Metrics;
use super::model::{Loaded, ModelSlot};
use super::oip;
use super::queue::{Input, Job, Refused, Ticket};
use super::ServeOptions;
use crate::infer::softmax;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(super) models: Arc<BTreeMap<String, Arc<ModelSlot>>>,
    pub(super) opts: Arc<ServeOptions>,
    pub(super) metrics: Arc<Metrics>,
}

impl AppState {
    fn slot(&self, name: &str) -> Result<&Arc<ModelSlot>, ApiError> {
        self.models.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            ApiError::unknown_model(name, &known)
        })
    }

    /// Queues `images` images on the model and awaits their logits.
    /// A place in the model's queue for a request about to be decoded, or the 503.
    fn reserve(&self, m: &Loaded) -> Result<Ticket, ApiError> {
        m.queue.reserve().map_err(|refused| self.refusal(refused))
    }

    fn refusal(&self, refused: Refused) -> ApiError {
        match refused {
            Refused::Full => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the model's queue is full ({} requests waiting or decoding): retry later", self.opts.queue),
            ),
            Refused::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping: retry later"),
        }
    }

    async fn submit(&self, m: &Loaded, ticket: Ticket, input: Input, images: usize) -> Result<Vec<f32>, ApiError> {
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let job = Job { input, images, deadline: self.opts.timeout.map(|t| now + t), queued: now, reply };
        m.queue.push(ticket, job).map_err(|refused| self.refusal(refused))?;
        match rx.await {
            Ok(Ok(logits)) => Ok(logits),
            Ok(Err(e)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
            // The batcher dropped it: its deadline passed in the queue.
            Err(_) => Err(deadline_error(&self.opts)),
        }
    }
}

fn deadline_error(opts: &ServeOptions) -> ApiError {
    let ms = opts.timeout.map_or(0, |t| t.as_millis());
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, format!("no answer within the deadline of {ms} ms (--timeout-ms)"))
}

/// The router over `state`'s models.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { Json(json!({ "live": true })) }))
        .route("/v2/health/ready", get(|| async { Json(json!({ "ready": true })) }))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v1/models/{name}/classify", post(classify))
        .route("/metrics", get(metrics))
        .fallback(|req: Request| async move {
            ApiError::new(StatusCode::NOT_FOUND, format!("no route {} {}", req.method(), req.uri().path()))
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // Multipart reads what `read_body` collected; the limit is ours.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Counts, times, logs and bounds every request.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "other".to_string(), |m| m.as_str().to_string());
    let path = req.uri().path().to_string();
    let model = model_of(&path).unwrap_or_default();
    let method = req.method().clone();
    state.metrics.in_flight(1);
    // Reloads may take longer than an answer should; everything else has the deadline.
    let response = match state.opts.timeout.filter(|_| !route.starts_with("/v2/repository")) {
        Some(t) => match tokio::time::timeout(t, next.run(req)).await {
            Ok(r) => r,
            Err(_) => deadline_error(&state.opts).into_response(),
        },
        None => next.run(req).await,
    };
    state.metrics.in_flight(-1);
    let status = response.status().as_u16();
    state.metrics.request(&model, &route, status, start.elapsed());
    log::debug!("{method} {path} -> {status} in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    response
}

/// The model name in `/v2/models/{name}/...`, `/v1/models/{name}/...` or `/v2/repository/models/{name}/...`.
fn model_of(path: &str) -> Option<String> {
    let rest = ["/v2/models/", "/v1/models/", "/v2/repository/models/"].iter().find_map(|p| path.strip_prefix(p))?;
    rest.split('/').next().map(str::to_string)
}

async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "vit-serve", "version": env!("CARGO_PKG_VERSION"), "extensions": ["model_repository"] }))
}

async fn model_metadata(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(oip::model_metadata(s.slot(&name)?)))
}

async fn model_ready(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    s.slot(&name)?;
    Ok(Json(json!({ "name": name, "ready": true })))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn infer(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let slot = s.slot(&name)?;
    if headers.contains_key("inference-header-content-length") {
        return Err(ApiError::bad_request(
            "the binary tensor extension is not supported: send JSON data (tritonclient: binary_data=False for inputs and outputs)",
        ));
    }
    let bytes = read_body(body, s.opts.max_body, s.opts.body_timeout).await?;
    let m = slot.current();
    let ticket = s.reserve(&m)?;
    let parsed = {
        let m = Arc::clone(&m);
        tokio::task::spawn_blocking(move || oip::parse_request(&m, &bytes)).await.map_err(internal)??
    };
    let (id, input, images) = parsed;
    let logits = s.submit(&m, ticket, input, images).await?;
    Ok(Json(oip::response(slot, id, logits, images, m.labels.len())))
}

#[derive(Debug, Deserialize)]
struct ClassifyQuery {
    top_k: Option<usize>,
}

async fn classify(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ClassifyQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let slot = s.slot(&name)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e} (expected ?top_k=N)")))?;
    let top_k = q.top_k.unwrap_or(5).max(1);
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, s.opts.max_body, s.opts.body_timeout).await?;
    let image = if multipart { first_file(Request::from_parts(parts, Body::from(bytes))).await? } else { bytes };
    let m = slot.current();
    let ticket = s.reserve(&m)?;
    let pixels = {
        let m = Arc::clone(&m);
        tokio::task::spawn_blocking(move || decode_image(&m.prep, &image)).await.map_err(internal)??
    };
    let logits = s.submit(&m, ticket, Input::U8Chw(pixels), 1).await?;
    if !logits.iter().all(|v| v.is_finite()) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model gave non-finite logits (NaN or infinity)",
        ));
    }
    let probs = softmax(&logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    // Stable, as vit-infer's top-k: equal probabilities keep index order.
    order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap_or(std::cmp::Ordering::Equal));
    let top: Vec<Value> =
        order.into_iter().take(top_k).map(|i| json!({ "label": m.labels[i], "score": probs[i] as f32 })).collect();
    Ok(Json(Value::Array(top)))
}

/// The bytes of the first part of a multipart form.
async fn first_file(req: Request) -> Result<axum::body::Bytes, ApiError> {
    let bad = |e: &dyn std::fmt::Display| ApiError::bad_request(format!("bad multipart form: {e}"));
    let mut form = axum::extract::Multipart::from_request(req, &()).await.map_err(|e| bad(&e))?;
    let field =
        form.next_field().await.map_err(|e| bad(&e))?.ok_or_else(|| {
            ApiError::bad_request("the multipart form has no part: send the image as its one file field")
        })?;
    field.bytes().await.map_err(|e| bad(&e))
}

async fn load(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let slot = s.slot(&name)?;
    slot.reload(Arc::clone(&s.opts), Arc::clone(&s.metrics)).await.map_err(|e| {
        log::warn!("reloading `{name}` failed, the old model keeps serving: {e}");
        ApiError::bad_request(format!("{e}; the previous model keeps serving"))
    })?;
    Ok(Json(json!({ "name": name, "loaded": true })))
}

fn internal(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("a worker failed: {e}"))
}
