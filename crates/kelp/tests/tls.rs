//! TLS from `security.toml`, tested with real clients: HTTPS on the master
//! and the volume server (curl), mutual TLS on gRPC between Kelp's own
//! daemons, and a real `weed` volume server and `weed upload` joining a
//! Kelp cluster over mutual TLS with the same file.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kelp_net::test_pki::{self, Pki};
use serde_json::Value;

/// A `security.toml` turning on every TLS section with `pki`'s files.
/// The server certificate serves both directions (as one shared file does
/// in SeaweedFS deployments); tools present the client certificate.
fn security_toml(pki: &Pki, https: bool, extra: &str) -> String {
    let (ca, sc, sk, cc, ck) = (
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    );
    let mut s = format!(
        "[grpc]\nca = \"{ca}\"\n\
         [grpc.master]\ncert = \"{sc}\"\nkey = \"{sk}\"\n\
         [grpc.volume]\ncert = \"{sc}\"\nkey = \"{sk}\"\n\
         [grpc.client]\ncert = \"{cc}\"\nkey = \"{ck}\"\n"
    );
    if https {
        s.push_str(&format!(
            "[https.master]\ncert = \"{sc}\"\nkey = \"{sk}\"\n\
             [https.volume]\ncert = \"{sc}\"\nkey = \"{sk}\"\nca = \"{ca}\"\n\
             [https.client]\nenabled = true\nca = \"{ca}\"\ncert = \"{sc}\"\nkey = \"{sk}\"\n"
        ));
    }
    s.push_str(extra);
    s
}

fn curl() -> Option<std::path::PathBuf> {
    require_tool("curl", which("curl"))
}

/// `curl -sS args`: (exit success, stdout, stderr).
fn run_curl(curl: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(curl).arg("-sS").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Master over HTTPS, volume server over HTTPS with client certificates
/// required, gRPC over mutual TLS: the volume server joins (heartbeat over
/// mTLS), curl assigns, uploads, reads and deletes over HTTPS, and clients
/// without the right certificates are refused.
#[test]
fn https_and_mutual_tls_grpc_with_curl() {
    let Some(curl) = curl() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki::generate(&tmp.path().join("pki"));
    let rogue = test_pki::generate(&tmp.path().join("rogue"));
    let cwd = tmp.path().join("cwd");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        cwd.join("security.toml"),
        security_toml(&pki, true, "[jwt.signing]\nkey = \"tls-write\"\n"),
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
        ],
        &tmp.path().join("logs"),
        Some(&cwd),
    );
    let master = format!("https://127.0.0.1:{}", kelp.port("master_port"));
    let volume = format!("https://127.0.0.1:{}", kelp.port("volume_port"));
    let ca = pki.ca.display().to_string();
    let (cc, ck) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );

    // The volume server reaches the master over mutual TLS, so assigns
    // succeed once its first heartbeat is in.
    let assign: Value = wait_until("an assign over HTTPS", DEADLINE, || {
        let (ok, out, _) = run_curl(&curl, &["--cacert", &ca, &format!("{master}/dir/assign")]);
        ok.then(|| serde_json::from_str::<Value>(&out).ok())
            .flatten()
            .filter(|v| v["fid"].is_string())
    });
    let fid = assign["fid"].as_str().unwrap();
    let auth = assign["auth"].as_str().unwrap();
    assert_eq!(
        assign["url"].as_str().unwrap(),
        format!("127.0.0.1:{}", kelp.port("volume_port"))
    );

    // Plain HTTP to the HTTPS port gets no answer; an unknown CA fails the
    // handshake.
    let (ok, _, _) = run_curl(
        &curl,
        &[&format!(
            "http://127.0.0.1:{}/dir/assign",
            kelp.port("master_port")
        )],
    );
    assert!(!ok, "plain HTTP on the HTTPS port");
    let (ok, _, err) = run_curl(
        &curl,
        &[
            "--cacert",
            &rogue.ca.display().to_string(),
            &format!("{master}/dir/assign"),
        ],
    );
    assert!(!ok && err.contains("certificate"), "wrong CA: {err}");

    // The volume server requires a client certificate from its CA.
    let file = tmp.path().join("blob.bin");
    std::fs::write(&file, blob(3, 5000)).unwrap();
    let form = format!("file=@{}", file.display());
    let target = format!("{volume}/{fid}");
    let bearer = format!("Authorization: Bearer {auth}");
    let (ok, _, _) = run_curl(
        &curl,
        &["--cacert", &ca, "-H", &bearer, "-F", &form, &target],
    );
    assert!(!ok, "upload without a client certificate");
    let (rc, rk) = (
        rogue.client_cert.display().to_string(),
        rogue.client_key.display().to_string(),
    );
    let (ok, _, _) = run_curl(
        &curl,
        &[
            "--cacert", &ca, "--cert", &rc, "--key", &rk, "-H", &bearer, "-F", &form, &target,
        ],
    );
    assert!(!ok, "upload with a certificate of another CA");
    let (ok, out, err) = run_curl(
        &curl,
        &[
            "--cacert", &ca, "--cert", &cc, "--key", &ck, "-H", &bearer, "-F", &form, &target,
        ],
    );
    assert!(ok && out.contains("\"size\""), "upload: {out} {err}");
    let got = tmp.path().join("got.bin");
    let (ok, _, err) = run_curl(
        &curl,
        &[
            "--cacert",
            &ca,
            "--cert",
            &cc,
            "--key",
            &ck,
            "-o",
            &got.display().to_string(),
            &target,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&got).unwrap(), blob(3, 5000));

    // gRPC: a plain-text client and a client without a certificate are
    // refused; the tool certificate gets an assignment.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let grpc_port = kelp.port("master_grpc_port");
    let assign_with = |tls: Option<tonic::transport::ClientTlsConfig>| {
        rt.block_on(async {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut ep = tonic::transport::Endpoint::from_shared(format!(
                "{scheme}://127.0.0.1:{grpc_port}"
            ))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(5));
            if let Some(t) = tls {
                ep = ep.tls_config(t).unwrap();
            }
            let channel = ep.connect().await.map_err(|e| format!("{e:?}"))?;
            let mut c = kelp_proto::master_pb::seaweed_client::SeaweedClient::new(channel);
            c.assign(kelp_proto::master_pb::AssignRequest {
                count: 1,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().fid)
            .map_err(|e| format!("{e:?}"))
        })
    };
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let ca_cert = tonic::transport::Certificate::from_pem(pem(&pki.ca));
    assert!(assign_with(None).is_err(), "plain-text gRPC");
    let no_identity = tonic::transport::ClientTlsConfig::new().ca_certificate(ca_cert.clone());
    assert!(
        assign_with(Some(no_identity)).is_err(),
        "gRPC without a client certificate"
    );
    let rogue_identity = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca_cert.clone())
        .identity(tonic::transport::Identity::from_pem(
            pem(&rogue.client_cert),
            pem(&rogue.client_key),
        ));
    assert!(
        assign_with(Some(rogue_identity)).is_err(),
        "gRPC with another CA's certificate"
    );
    let good = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca_cert)
        .identity(tonic::transport::Identity::from_pem(
            pem(&pki.client_cert),
            pem(&pki.client_key),
        ));
    let fid = assign_with(Some(good)).expect("assign over mutual TLS");
    assert!(fid.contains(','), "{fid}");
}

/// A real `weed volume` and `weed upload`/`weed download` use a Kelp
/// master over mutual TLS with the same `security.toml`: the master
/// allocates volumes on the weed server (Kelp dials weed with its
/// certificate), weed heartbeats in (weed dials Kelp), and blobs round-trip.
#[test]
fn weed_joins_a_kelp_cluster_over_mutual_tls() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki::generate(&tmp.path().join("pki"));
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("security.toml"), security_toml(&pki, false, "")).unwrap();
    let client = http();

    let mport = free_port_pair();
    let mdir = tmp.path().join("kelp-master");
    let kelp = Kelp::start_in(
        &[
            "master",
            "-ip=127.0.0.1",
            &format!("-port={mport}"),
            &format!("-mdir={}", mdir.display()),
        ],
        &tmp.path().join("logs"),
        Some(&cwd),
    );
    wait_healthy(&kelp.master_url());
    let master = kelp.master_url();

    let vport = free_port_pair();
    let vurl = format!("127.0.0.1:{vport}");
    let vdir = tmp.path().join("weed-volume");
    std::fs::create_dir_all(&vdir).unwrap();
    let vlog = tmp.path().join("logs").join("weed-volume.log");
    let _volume = Proc(
        Command::new(&weed)
            .current_dir(&cwd)
            .args([
                "volume".to_string(),
                "-ip=127.0.0.1".to_string(),
                format!("-port={vport}"),
                format!("-dir={}", vdir.display()),
                format!("-mserver=127.0.0.1:{mport}"),
                "-max=10".to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&vlog).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the weed volume server to heartbeat in over mutual TLS",
        DEADLINE,
        || master_lists_node(&client, &master, &vurl).then_some(()),
    );

    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}.bin"), blob(40 + i, 1000 + i as usize * 4096)))
        .collect();
    let mut args = vec!["upload".to_string(), format!("-master=127.0.0.1:{mport}")];
    for (name, bytes) in &files {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        args.push(p.display().to_string());
    }
    let run = run_tool(
        Command::new(&weed).current_dir(&cwd).args(&args),
        &tmp.path().join("logs"),
        DEADLINE,
    );
    assert!(
        run.success,
        "weed upload over mutual TLS: {}\n{}\nweed volume log: {}\nkelp log: {}",
        run.stdout,
        run.stderr,
        tail(&vlog, 3000),
        tail(&kelp.log, 3000)
    );
    let uploaded = parse_upload(&run.stdout);
    assert_eq!(uploaded.len(), files.len(), "{}", run.stdout);
    let out = tmp.path().join("out");
    for u in &uploaded {
        let want = &files.iter().find(|(n, _)| *n == u.name).unwrap().1;
        let got = weed_download(&weed, Some(&cwd), mport, u, &out, DEADLINE);
        assert!(got == *want, "{} downloads as uploaded", u.name);
    }
    // The volumes weed holds were allocated by the Kelp master over mTLS.
    let status: Value = client
        .get(format!("http://{vurl}/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        status["Volumes"].as_array().is_some_and(|v| !v.is_empty()),
        "{status}"
    );
}

/// A TLS section naming a missing file, or half a section, stops the
/// daemon before it listens, with the file or section named.
#[test]
fn bad_tls_settings_stop_the_server_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki::generate(&tmp.path().join("pki"));
    for (toml, says) in [
        (
            format!(
                "[https.master]\ncert = \"{}\"\nkey = \"/nonexistent/master.key\"\n",
                pki.server_cert.display()
            ),
            "/nonexistent/master.key".to_string(),
        ),
        (
            format!("[grpc.master]\ncert = \"{}\"\n", pki.server_cert.display()),
            "[grpc.master]".to_string(),
        ),
        (
            format!(
                "[grpc]\nca = \"{}\"\n[grpc.master]\ncert = \"{}\"\nkey = \"{}\"\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_cert.display()
            ),
            "no PEM private key".to_string(),
        ),
    ] {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::write(cwd.path().join("security.toml"), &toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .current_dir(cwd.path())
            .args([
                "master",
                "-port=0",
                &format!("-mdir={}", cwd.path().join("m").display()),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}: started anyway");
        assert!(err.contains(&says), "{toml}: {err}");
    }
}
