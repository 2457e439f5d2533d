//! JWT checks on the volume HTTP API: writes and deletes need a token for
//! the file signed with the write key, reads one signed with the read key;
//! the token may come in `?jwt=`, `Authorization: Bearer` or cookie `AT`.

mod common;

use common::{Server, client};
use kelp_core::JwtKey;
use reqwest::StatusCode;
use serde_json::Value;

const FID: &str = "1,01637037d6";

async fn start(write: &str, read: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let (w, r) = (write.to_string(), read.to_string());
    let srv = Server::start(dir.path().to_path_buf(), move |c| {
        c.security.signing = JwtKey::new(w, 10);
        c.security.read = JwtKey::new(r, 10);
    })
    .await;
    srv.allocate(1, "").await;
    (dir, srv)
}

async fn assert_wrong_jwt(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "wrong jwt", "{what}");
}

#[tokio::test]
async fn writes_and_deletes_need_a_write_token() {
    let (_dir, srv) = start("write-key", "").await;
    let c = client();
    let key = JwtKey::new("write-key", 10);
    let good = key.mint(FID).unwrap();

    // No token, garbage, another key, another file, expired: all 401.
    let url = srv.url(&format!("/{FID}"));
    assert_wrong_jwt(c.post(&url).body("x").send().await.unwrap(), "none").await;
    assert_wrong_jwt(
        c.post(&url)
            .bearer_auth("junk")
            .body("x")
            .send()
            .await
            .unwrap(),
        "junk",
    )
    .await;
    let foreign = JwtKey::new("other", 10).mint(FID).unwrap();
    assert_wrong_jwt(
        c.post(&url)
            .bearer_auth(foreign)
            .body("x")
            .send()
            .await
            .unwrap(),
        "other key",
    )
    .await;
    let other_file = key.mint("1,02637037d6").unwrap();
    assert_wrong_jwt(
        c.put(&url)
            .bearer_auth(other_file)
            .body("x")
            .send()
            .await
            .unwrap(),
        "other file",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = key.mint_with(FID, Some(now - 2)).unwrap();
    assert_wrong_jwt(
        c.post(&url)
            .bearer_auth(expired)
            .body("x")
            .send()
            .await
            .unwrap(),
        "expired",
    )
    .await;

    // The scheme is case-insensitive (weed sends "BEARER").
    let r = c
        .post(&url)
        .header("Authorization", format!("BEARER {good}"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Query parameter, and a `_N` suffix on the path maps to the base fid.
    let r = c
        .post(srv.url(&format!("/{FID}_1?jwt={good}")))
        .body("hello 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Reads are open: no read key.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello");

    // Delete: refused without a token, accepted with the cookie `AT`.
    assert_wrong_jwt(c.delete(&url).send().await.unwrap(), "delete").await;
    let r = c
        .delete(&url)
        .header("Cookie", format!("other=1; AT={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    srv.stop().await;
}

#[tokio::test]
async fn reads_need_a_read_token_when_a_read_key_is_set() {
    let (_dir, srv) = start("", "read-key").await;
    let c = client();
    let url = srv.url(&format!("/{FID}"));
    // No write key: uploads are open.
    let r = c.post(&url).body("secret data").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    assert_wrong_jwt(c.get(&url).send().await.unwrap(), "get").await;
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "head");
    // A write-key token is not a read token.
    let w = JwtKey::new("write-key", 10).mint(FID).unwrap();
    assert_wrong_jwt(
        c.get(&url).bearer_auth(w).send().await.unwrap(),
        "wrong key",
    )
    .await;

    let t = JwtKey::new("read-key", 10).mint(FID).unwrap();
    for req in [
        c.get(srv.url(&format!("/{FID}.txt?jwt={t}"))),
        c.get(&url).bearer_auth(&t),
        c.get(srv.url("/1/01637037d6/name.txt"))
            .header("Cookie", format!("AT={t}")),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "secret data");
    }
    // Status pages are not guarded.
    let r = c.get(srv.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    srv.stop().await;
}
