//! Security of the blob store as an operator turns it on: every HTTP route
//! and gRPC method of `kelp server`, walked from the lists the routers are
//! built from, refuses a caller without credentials wherever it touches
//! data or state; the white list shuts out other addresses; tokens that
//! are expired, for another file, unsigned, signed with the wrong key or
//! garbage are refused; the README's curl flow works with tokens.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use kelp_core::{JwtKey, SecurityConfig};
use kelp_net::Access;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

const WRITE_KEY: &str = "walk-write-secret";
const READ_KEY: &str = "walk-read-secret";
const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "PUT", "DELETE"];

fn secured_server(tmp: &std::path::Path, extra: &[&str]) -> Kelp {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let w = format!("-jwt.signing.key={WRITE_KEY}");
    let r = format!("-jwt.signing.read.key={READ_KEY}");
    let mut args = vec![w.as_str(), r.as_str()];
    args.extend_from_slice(extra);
    kelp_server(&data, &args)
}

/// One blob written with its token; returns (fid, volume url).
fn upload_one(client: &Client, kelp: &Kelp, body: &[u8]) -> (String, String) {
    let v: Value = wait_until("an assign", DEADLINE, || {
        let r = client
            .get(format!("{}/dir/assign", kelp.master_url()))
            .send()
            .ok()?;
        r.status().is_success().then(|| r.json().ok()).flatten()
    });
    let fid = v["fid"].as_str().unwrap().to_string();
    let url = v["url"].as_str().unwrap().to_string();
    let auth = v["auth"].as_str().expect("assign JSON carries auth");
    let r = client
        .post(format!("http://{url}/{fid}"))
        .bearer_auth(auth)
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    (fid, url)
}

fn request(client: &Client, method: &str, url: &str) -> reqwest::blocking::RequestBuilder {
    client.request(method.parse().unwrap(), url)
}

/// `path` of a route table with its placeholder filled and, for the admin
/// routes, parameters naming a real volume and needle.
fn concrete(path: &str, fid: &str) -> String {
    let (vid, rest) = fid.split_once(',').unwrap();
    // The needle key is the hex before the 8-digit cookie.
    let key = u64::from_str_radix(&rest[..rest.len() - 8], 16).unwrap();
    match path {
        "/{fid}" => format!("/{fid}"),
        "/admin/replica/digest" => format!("{path}?volume={vid}"),
        "/admin/replica/needle" => format!("{path}?volume={vid}&key={key}"),
        "/admin/replica/fill" => format!("{path}?volume=99&collection=&replication=000"),
        "/vol/grow" => format!("{path}?count=1"),
        "/col/delete" => format!("{path}?collection=walk"),
        "/dir/lookup" => format!("{path}?volumeId={vid}"),
        p => p.to_string(),
    }
}

fn is_refusal(s: StatusCode) -> bool {
    s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN
}

/// A raw gRPC call: an empty message to `path`, whatever its types (an
/// empty protobuf message decodes as every message with default fields).
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct Bytes;
    pub struct Enc;
    pub struct Dec;

    impl Codec for Bytes {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Enc;
        type Decoder = Dec;
        fn encoder(&mut self) -> Enc {
            Enc
        }
        fn decoder(&mut self) -> Dec {
            Dec
        }
    }

    impl Encoder for Enc {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Dec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    /// The call's status code; `None` when no answer came within `wait`
    /// (a stream that stays open, which is not a refusal).
    pub async fn call(
        port: u16,
        path: &'static str,
        token: Option<String>,
        wait: std::time::Duration,
    ) -> Option<tonic::Code> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(Vec::new());
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let call = grpc.unary(req, http::uri::PathAndQuery::from_static(path), Bytes);
        match tokio::time::timeout(wait, call).await {
            Ok(Ok(_)) => Some(tonic::Code::Ok),
            Ok(Err(status)) => Some(status.code()),
            Err(_) => None,
        }
    }
}

/// The gRPC port serving `path` and the access class its guard applies.
fn grpc_target(kelp: &Kelp, path: &str) -> (u16, Access) {
    if path.starts_with("/master_pb.") {
        (
            kelp.port("master_grpc_port"),
            kelp_master::access::grpc(path),
        )
    } else if path.starts_with("/volume_server_pb.") {
        (
            kelp.port("volume_grpc_port"),
            kelp_volume::access::grpc(path),
        )
    } else {
        panic!("{path}: a gRPC service no daemon of `kelp server` serves")
    }
}

/// With write and read keys on and no credentials: peer routes answer
/// 401, file routes 401 for reads and writes, peer RPCs
/// PERMISSION_DENIED; client routes (where tokens are handed out) answer.
/// A peer token opens the peer routes.
#[test]
fn every_route_and_method_refuses_a_caller_without_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let kelp = secured_server(tmp.path(), &[]);
    // Redirects are answers of their own (the master's `/{fid}` is one).
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let (fid, _) = upload_one(&client, &kelp, b"secret bytes");
    // The operator's way to a peer token: `kelp token peer` with the same keys.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["token", "peer", &format!("-jwt.signing.key={WRITE_KEY}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let peer_token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut walked = Vec::new();
    for (base, table) in [
        (kelp.master_url(), kelp_master::access::http()),
        (kelp.volume_url(), kelp_volume::access::http()),
    ] {
        for (path, access) in table {
            let url = format!("{base}{}", concrete(path, &fid));
            for method in METHODS {
                let status = request(&client, method, &url).send().unwrap().status();
                let what = format!("{method} {url} ({access:?})");
                match access {
                    Access::Open | Access::Client => {
                        assert!(!is_refusal(status), "{what} refused: {status}")
                    }
                    Access::PublicReads | Access::Peer => {
                        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}")
                    }
                }
                walked.push(what);
            }
            if access == Access::Peer && path != "/admin/replica/fill" {
                let r = client.get(&url).bearer_auth(&peer_token).send().unwrap();
                assert!(!is_refusal(r.status()), "GET {url} with a peer token");
            }
        }
    }
    assert!(walked.len() >= 5 * 20, "walked {}", walked.len());
    // Without any key there is no peer token to print.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["token", "peer"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster key"));

    // The blob itself: the admin needle route serves it to a peer only.
    let (vid, rest) = fid.split_once(',').unwrap();
    let key = u64::from_str_radix(&rest[..rest.len() - 8], 16).unwrap();
    let needle = format!(
        "{}/admin/replica/needle?volume={vid}&key={key}",
        kelp.volume_url()
    );
    let raw = client.get(&needle).bearer_auth(&peer_token).send().unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert!(
        raw.bytes()
            .unwrap()
            .windows(12)
            .any(|w| w == b"secret bytes")
    );
    // A file token is not a peer token.
    let file_token = JwtKey::new(WRITE_KEY, 10).mint(&fid).unwrap();
    let r = client.get(&needle).bearer_auth(file_token).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Every gRPC method of both daemons.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for path in kelp_proto::METHODS {
        let (port, access) = grpc_target(&kelp, path);
        let code = rt.block_on(raw::call(port, path, None, Duration::from_secs(2)));
        match access {
            Access::Peer => assert_eq!(code, Some(tonic::Code::PermissionDenied), "{path}"),
            _ => assert_ne!(code, Some(tonic::Code::PermissionDenied), "{path}"),
        }
        if access == Access::Peer {
            let code = rt.block_on(raw::call(
                port,
                path,
                Some(peer_token.clone()),
                Duration::from_secs(2),
            ));
            assert_ne!(
                code,
                Some(tonic::Code::PermissionDenied),
                "{path} with a peer token"
            );
        }
    }
}

/// `-whiteList` names another address: everything but health checks (and
/// reads of file ids, as in SeaweedFS) answers 403 / PERMISSION_DENIED.
#[test]
fn an_address_off_the_white_list_reaches_only_health_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let kelp = kelp_server(&data, &["-whiteList=127.0.0.2, 10.0.0.0/8"]);
    let client = http();
    let fid = "1,01637037d6";
    for (base, table) in [
        (kelp.master_url(), kelp_master::access::http()),
        (kelp.volume_url(), kelp_volume::access::http()),
    ] {
        for (path, access) in table {
            let url = format!("{base}{}", concrete(path, fid));
            for method in METHODS {
                let status = request(&client, method, &url).send().unwrap().status();
                let what = format!("{method} {url} ({access:?})");
                let read = method == "GET" || method == "HEAD";
                match access {
                    Access::Open => assert!(!is_refusal(status), "{what}: {status}"),
                    Access::PublicReads if read => {
                        assert!(!is_refusal(status), "{what}: {status}")
                    }
                    _ => assert_eq!(status, StatusCode::FORBIDDEN, "{what}"),
                }
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    for path in kelp_proto::METHODS {
        let (port, _) = grpc_target(&kelp, path);
        let code = rt.block_on(raw::call(port, path, None, Duration::from_secs(2)));
        assert_eq!(code, Some(tonic::Code::PermissionDenied), "{path}");
    }

    // A bad white list stops the server before it listens.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["master", "-port=0", "-whiteList=10.0.0.1,nohost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nohost"), "{err}");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens a volume server must refuse for a write and for a read.
#[test]
fn bad_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let kelp = secured_server(tmp.path(), &[]);
    let client = http();
    let (fid, url) = upload_one(&client, &kelp, b"kept");
    let write = JwtKey::new(WRITE_KEY, 10);
    let read = JwtKey::new(READ_KEY, 10);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let other_fid = {
        let (vid, rest) = fid.split_once(',').unwrap();
        let last = rest.chars().last().unwrap();
        let flipped = if last == '0' { '1' } else { '0' };
        format!("{vid},{}{flipped}", &rest[..rest.len() - 1])
    };
    let claims = format!(r#"{{"fid":"{fid}","exp":{}}}"#, now + 60);
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.as_bytes())
    );
    let bad: Vec<(&str, String)> = vec![
        ("expired", write.mint_with(&fid, Some(now - 5)).unwrap()),
        ("for another file id", write.mint(&other_fid).unwrap()),
        ("alg none", alg_none.clone()),
        ("signed with the read key", read.mint(&fid).unwrap()),
        ("garbage", "x.y.z".to_string()),
        ("not even a JWT", "garbage".to_string()),
        ("a peer token", {
            let mut s = SecurityConfig::default();
            s.signing.key = WRITE_KEY.into();
            s.peer_token().unwrap()
        }),
    ];
    for (what, token) in &bad {
        let r = client
            .post(format!("http://{url}/{fid}"))
            .bearer_auth(token)
            .body("overwrite")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "write with {what}");
        let r = client
            .delete(format!("http://{url}/{fid}?jwt={token}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "delete with {what}");
    }
    // Reads: the write key's token, expired and unsigned ones are refused.
    for (what, token) in [
        ("a write token", write.mint(&fid).unwrap()),
        ("expired", read.mint_with(&fid, Some(now - 5)).unwrap()),
        ("alg none", alg_none),
        ("for another file id", read.mint(&other_fid).unwrap()),
    ] {
        let r = client
            .get(format!("http://{url}/{fid}"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "read with {what}");
    }
    // Nothing was changed by the refused calls.
    let r = client
        .get(format!("http://{url}/{fid}"))
        .bearer_auth(read.mint(&fid).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "kept");
}

/// The README's curl flow with tokens on: the write token from assign's
/// `auth`, a read token from `/dir/lookup?fileId=...&read=yes`.
#[test]
fn readme_curl_flow_with_tokens() {
    let Some(curl) = require_tool("curl", which("curl")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let kelp = secured_server(tmp.path(), &[]);
    let master = kelp.master_url();
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(&curl)
            .arg("-sS")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {:?}", out);
        String::from_utf8(out.stdout).unwrap()
    };
    let assign: Value = wait_until("an assign", DEADLINE, || {
        serde_json::from_str::<Value>(&run(&[&format!("{master}/dir/assign")]))
            .ok()
            .filter(|v| v["fid"].is_string())
    });
    let (fid, url) = (
        assign["fid"].as_str().unwrap(),
        assign["url"].as_str().unwrap(),
    );
    let auth = assign["auth"].as_str().unwrap();
    let photo = tmp.path().join("photo.jpg");
    std::fs::write(&photo, blob(7, 3000)).unwrap();
    let target = format!("http://{url}/{fid}");
    let denied = run(&["-F", &format!("file=@{}", photo.display()), &target]);
    assert!(denied.contains("wrong jwt"), "{denied}");
    let stored = run(&[
        "-H",
        &format!("Authorization: Bearer {auth}"),
        "-F",
        &format!("file=@{}", photo.display()),
        &target,
    ]);
    assert!(stored.contains("\"size\""), "{stored}");
    let lookup: Value = serde_json::from_str(&run(&[&format!(
        "{master}/dir/lookup?fileId={fid}&read=yes"
    )]))
    .unwrap();
    let read = lookup["auth"]
        .as_str()
        .expect("lookup carries a read token");
    let got = tmp.path().join("got.jpg");
    run(&[
        "-H",
        &format!("Authorization: Bearer {read}"),
        "-o",
        &got.display().to_string(),
        &target,
    ]);
    assert_eq!(std::fs::read(&got).unwrap(), blob(7, 3000));
    let gone = run(&["-X", "DELETE", &format!("{target}?jwt={auth}")]);
    assert!(!gone.contains("error"), "{gone}");
}
