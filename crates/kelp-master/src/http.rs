//! The SeaweedFS-compatible master HTTP API (reference 3.1).
//!
//! Every route is listed once in [`routes`] with its access class
//! (kelp-net `guard.rs`); the router is built from that list, and the
//! security tests walk the same list, so no route can miss its guard.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router, middleware};
use kelp_net::Access;
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

type Routes = Vec<(&'static str, Access, MethodRouter<Arc<Master>>)>;

/// Every route, its access class and its handlers.
fn routes() -> Routes {
    vec![
        ("/dir/assign", Access::Client, get(assign).post(assign)),
        ("/dir/lookup", Access::Client, get(lookup).post(lookup)),
        ("/dir/status", Access::Client, get(dir_status)),
        ("/vol/grow", Access::Peer, get(grow).post(grow)),
        ("/vol/status", Access::Client, get(vol_status)),
        (
            "/vol/vacuum",
            Access::Peer,
            get(crate::vacuum::http).post(crate::vacuum::http),
        ),
        ("/cluster/status", Access::Client, get(cluster_status)),
        ("/cluster/healthz", Access::Open, get(healthy)),
        ("/healthz", Access::Open, get(healthy)),
        ("/readyz", Access::Open, get(healthy)),
        (
            "/col/delete",
            Access::Peer,
            get(delete_collection)
                .post(delete_collection)
                .delete(delete_collection),
        ),
        ("/metrics", Access::Client, get(render_metrics)),
        ("/{fid}", Access::Client, get(redirect_to_volume)),
    ]
}

/// Paths and access classes of every route (`{fid}` is a path segment).
pub fn route_table() -> Vec<(&'static str, Access)> {
    routes().into_iter().map(|(p, a, _)| (p, a)).collect()
}

pub fn router(master: Arc<Master>) -> Router {
    let security = master.security.clone();
    let mut router = Router::new();
    for (path, access, methods) in routes() {
        let guard = kelp_net::guard::HttpGuard {
            security: security.clone(),
            access,
        };
        // On the method router, so methods a route lacks are guarded too.
        router = router.route(
            path,
            methods.layer(middleware::from_fn_with_state(guard, kelp_net::guard::http)),
        );
    }
    router
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
    /// The write token, also in the `Authorization` header (SeaweedFS's
    /// struct has this field; its HTTP handler leaves it empty, so clients
    /// that read only the header work as well).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
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
    let token = m.security.signing.mint(&fid);
    let mut resp = Json(AssignJson {
        fid,
        url: a.location.url,
        public_url: a.location.public_url,
        count: a.count,
        auth: token.clone(),
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
            // A file id lookup carries a token for that file: a read token
            // with `read=yes`, else a write token; in the header as
            // SeaweedFS sends it, and as `auth` in the body.
            let file_id = p.get("fileId").trim();
            let token = (!file_id.is_empty())
                .then(|| {
                    let sec = &m.security;
                    let key = if p.get("read") == "yes" {
                        &sec.read
                    } else {
                        &sec.signing
                    };
                    key.mint(file_id)
                })
                .flatten();
            let mut body = json!({"volumeOrFileId": raw, "locations": locations});
            if let Some(t) = &token {
                body["auth"] = t.clone().into();
            }
            let mut resp = Json(body).into_response();
            set_bearer(&mut resp, token);
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
    let scheme = kelp_net::client::http_scheme(&m.security);
    let mut target = format!("{scheme}://{}/{}", loc.public_url, fid);
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
