//! The SeaweedFS-compatible master HTTP API (reference 3.1).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use rand::seq::IndexedRandom;
use serde::Serialize;
use serde_json::json;

use crate::error::MasterError;
use crate::grpc::parse_volume_or_file_id;
use crate::master::{AssignParams, Master};
use crate::params::Params;
use crate::placement::Pins;
use crate::{metrics, status};

type AppState = State<Arc<Master>>;

pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/dir/assign", get(assign).post(assign))
        .route("/dir/lookup", get(lookup).post(lookup))
        .route("/dir/status", get(dir_status))
        .route("/vol/grow", get(grow).post(grow))
        .route("/vol/status", get(vol_status))
        .route(
            "/vol/vacuum",
            get(crate::vacuum::http).post(crate::vacuum::http),
        )
        .route("/cluster/status", get(cluster_status))
        .route("/cluster/healthz", get(healthy))
        .route("/healthz", get(healthy))
        .route("/readyz", get(healthy))
        .route(
            "/col/delete",
            get(delete_collection)
                .post(delete_collection)
                .delete(delete_collection),
        )
        .route("/metrics", get(render_metrics))
        .route("/{fid}", get(redirect_to_volume))
        .fallback(not_found)
        .layer(middleware::from_fn(metrics::track))
        .with_state(master)
}

#[derive(Serialize)]
struct AssignJson {
    fid: String,
    url: String,
    #[serde(rename = "publicUrl")]
    public_url: String,
    count: u64,
}

fn assign_params(p: &Params, count: u64) -> AssignParams<'_> {
    AssignParams {
        count,
        replication: p.get("replication"),
        collection: p.get("collection"),
        ttl: p.get("ttl"),
        data_center: p.get("dataCenter"),
        rack: p.get("rack"),
        data_node: p.get("dataNode"),
    }
}

async fn assign(State(m): AppState, p: Params) -> Result<Response, MasterError> {
    let count = p.number::<u64>("count")?.unwrap_or(1);
    let req = m.parse_assign(&assign_params(&p, count))?;
    let a = m.assign(&req).await?;
    let fid = a.fid.to_string();
    let token = m.cfg.security.signing.mint(&fid);
    let mut resp = Json(AssignJson {
        fid,
        url: a.location.url,
        public_url: a.location.public_url,
        count: a.count,
    })
    .into_response();
    set_bearer(&mut resp, token);
    Ok(resp)
}

/// `Authorization: Bearer <token>` on a response, when there is a token.
fn set_bearer(resp: &mut Response, token: Option<String>) {
    if let Some(v) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        resp.headers_mut().insert(header::AUTHORIZATION, v);
    }
}

#[derive(Serialize)]
struct LocationJson {
    url: String,
    #[serde(rename = "publicUrl")]
    public_url: String,
    #[serde(rename = "dataCenter")]
    data_center: String,
    #[serde(rename = "grpcPort")]
    grpc_port: u32,
}

async fn lookup(State(m): AppState, p: Params) -> Response {
    let (raw, id) = match (p.get("volumeId"), p.get("fileId")) {
        ("", "") => {
            return MasterError::BadRequest("volumeId or fileId is required".to_string())
                .into_response();
        }
        // A volumeId may carry a key after the comma; only the id counts.
        ("", fid) => (fid, fid),
        (vid, _) => (vid, vid.split(',').next().unwrap_or(vid)),
    };
    let result = parse_volume_or_file_id(id).and_then(|vid| m.lookup(vid, p.get("collection")));
    match result {
        Ok(locations) => {
            let locations: Vec<LocationJson> = locations
                .into_iter()
                .map(|l| LocationJson {
                    url: l.url,
                    public_url: l.public_url,
                    data_center: l.data_center,
                    grpc_port: l.grpc_port,
                })
                .collect();
            let mut resp =
                Json(json!({"volumeOrFileId": raw, "locations": locations})).into_response();
            // A file id lookup carries a token for that file: a read token
            // with `read=yes`, else a write token.
            let file_id = p.get("fileId").trim();
            if !file_id.is_empty() {
                let sec = &m.cfg.security;
                let key = if p.get("read") == "yes" {
                    &sec.read
                } else {
                    &sec.signing
                };
                set_bearer(&mut resp, key.mint(file_id));
            }
            resp
        }
        Err(e) => (
            e.http_status(),
            Json(json!({"volumeOrFileId": raw, "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn grow(State(m): AppState, p: Params) -> Result<Json<serde_json::Value>, MasterError> {
    let count = p.number::<u32>("count")?;
    if count == Some(0) {
        return Err(MasterError::BadRequest(
            "count must be positive".to_string(),
        ));
    }
    let req = m.parse_assign(&assign_params(&p, 1))?;
    let pins = Pins {
        data_center: req.filter.data_center,
        rack: req.filter.rack,
        data_node: req.filter.data_node,
    };
    let created = m.grow(&req.layout, count, &pins).await?;
    Ok(Json(json!({ "count": created })))
}

async fn dir_status(State(m): AppState) -> Json<serde_json::Value> {
    Json(status::dir_status(&m.topo.lock()))
}

async fn vol_status(State(m): AppState) -> Json<serde_json::Value> {
    Json(status::vol_status(&m.topo.lock()))
}

async fn cluster_status(State(m): AppState) -> Json<serde_json::Value> {
    Json(json!({
        "IsLeader": true,
        "Leader": m.cfg.leader_address(),
        "MaxVolumeId": m.seq.max_volume_id(),
    }))
}

async fn healthy() -> StatusCode {
    StatusCode::OK
}

async fn delete_collection(State(m): AppState, p: Params) -> Result<StatusCode, MasterError> {
    let collection = p.get("collection");
    if collection.is_empty() {
        return Err(MasterError::BadRequest(
            "collection is required".to_string(),
        ));
    }
    m.delete_collection(collection).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn render_metrics(State(m): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        metrics::render(&m),
    )
        .into_response()
}

/// `GET /<fid>[.ext]` → 308 to a random replica, like SeaweedFS.
async fn redirect_to_volume(State(m): AppState, Path(fid): Path<String>, uri: Uri) -> Response {
    let bare = fid.split('.').next().unwrap_or(&fid);
    let vid = match parse_volume_or_file_id(bare) {
        Ok(vid) if bare.contains(',') => vid,
        Ok(_) => {
            return MasterError::BadRequest(format!("{fid:?} is not a file id")).into_response();
        }
        Err(e) => return e.into_response(),
    };
    let locations = match m.lookup(vid, "") {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let Some(loc) = locations.choose(&mut rand::rng()) else {
        return MasterError::VolumeNotFound(vid).into_response();
    };
    let mut target = format!("http://{}/{}", loc.public_url, fid);
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    match HeaderValue::from_str(&target) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => MasterError::BadRequest(format!("{fid:?} is not a file id")).into_response(),
    }
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("{} not found", uri.path())})),
    )
        .into_response()
}
