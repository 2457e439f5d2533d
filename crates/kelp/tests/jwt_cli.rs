//! JWT settings of the `kelp` binary: `./security.toml` in the working
//! directory, overridden by `-jwt.signing.key`; tokens from the master
//! open the volume server, missing ones get 401.

mod common;

use common::*;
use kelp_core::JwtKey;
use reqwest::StatusCode;
use serde_json::Value;

fn bearer(r: &reqwest::blocking::Response) -> Option<String> {
    r.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

#[test]
fn security_toml_and_flags_configure_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        cwd.join("security.toml"),
        "[jwt.signing]\nkey = \"from-file\"\n[jwt.signing.read]\nkey = \"read-from-file\"\n",
    )
    .unwrap();
    let dir_arg = format!("-dir={}", data.display());
    let kelp = Kelp::start_in(
        &[
            "server",
            &dir_arg,
            "-master.port=0",
            "-volume.port=0",
            "-ip=127.0.0.1",
            "-jwt.signing.key=from-flag",
        ],
        &tmp.path().join("logs"),
        Some(&cwd),
    );
    wait_healthy(&kelp.master_url());
    let client = http();

    let r = wait_until("an assign", DEADLINE, || {
        let r = client
            .get(format!("{}/dir/assign", kelp.master_url()))
            .send()
            .ok()?;
        r.status().is_success().then_some(r)
    });
    let token = bearer(&r).expect("token with the assignment");
    let v: Value = r.json().unwrap();
    let (fid, url) = (v["fid"].as_str().unwrap(), v["url"].as_str().unwrap());
    // The flag won over the file.
    let write = JwtKey::new("from-flag", 10);
    assert_eq!(write.verify(Some(&token), fid), Ok(()));

    let r = client
        .post(format!("http://{url}/{fid}"))
        .body("guarded")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .post(format!("http://{url}/{fid}?jwt={token}"))
        .body("guarded")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // The read key comes from the file: reads need a read token, which a
    // file-id lookup with read=yes hands out.
    let r = client.get(format!("http://{url}/{fid}")).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .get(format!(
            "{}/dir/lookup?fileId={fid}&read=yes",
            kelp.master_url()
        ))
        .send()
        .unwrap();
    let read = bearer(&r).expect("read token with the lookup");
    let r = client
        .get(format!("http://{url}/{fid}"))
        .bearer_auth(read)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "guarded");
}
