//! Downstairs security over real TCP on loopback: the per-volume secret
//! proven both ways (HMAC challenge-response), refusals with clear errors
//! on both sides, rogue downstairs, peers of another protocol version, and
//! mutual TLS between upstairs and downstairs with certificates made here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kelp_block::auth::Secret;
use kelp_block::downstairs;
use kelp_block::frame::{ErrorCode, FrameDecoder, Message, T_ERROR};
use kelp_block::upstairs::client::negotiate;
use kelp_block::upstairs::{self, Security, UpstairsConfig};
use kelp_block::{BlockError, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECRET: &[u8] = b"correct horse battery staple 42";
const OTHER: &[u8] = b"another volume's secret, not ours";

struct Cluster {
    _tmp: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    _stops: Vec<oneshot::Sender<()>>,
}

/// Three downstairs guarded by `secret` (None: open, as before).
async fn cluster(secret: Option<&[u8]>) -> Cluster {
    cluster_with(downstairs::Security {
        secret: secret.map(|s| Secret::new(s).unwrap()),
        tls: None,
    })
    .await
}

async fn cluster_with(security: downstairs::Security) -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    let mut addrs = vec![];
    let mut stops = vec![];
    for i in 0..3 {
        let dir = tmp.path().join(format!("r{i}"));
        let region = Region::create(&dir, 512, 64, 4).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        let security = security.clone();
        tokio::spawn(async move {
            downstairs::serve(
                listener,
                region,
                security,
                downstairs::CloneFill::Background,
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
    }
    Cluster {
        _tmp: tmp,
        addrs,
        _stops: stops,
    }
}

fn with_secret(secret: Option<&[u8]>) -> Security {
    Security {
        secret: secret.map(|s| Secret::new(s).unwrap()),
        tls: None,
    }
}

async fn negotiate_err(addr: SocketAddr, secret: Option<&[u8]>) -> BlockError {
    match negotiate(&addr.to_string(), 1, 1, &with_secret(secret)).await {
        Ok(_) => panic!("negotiation with {addr} should have failed"),
        Err(e) => e,
    }
}

/// Reads one frame (any version) from a raw socket: (version, type, body).
async fn raw_frame(s: &mut TcpStream) -> (u8, u8, Vec<u8>) {
    let mut h = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
        .await
        .expect("an answer in time")
        .expect("a frame header");
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let mut body = vec![0u8; len - 8];
    s.read_exact(&mut body).await.unwrap();
    (h[4], h[5], body)
}

/// The (code, text) of an Error frame body.
fn error_body(body: &[u8]) -> (u16, String) {
    let code = u16::from_le_bytes([body[0], body[1]]);
    let n = u32::from_le_bytes([body[2], body[3], body[4], body[5]]) as usize;
    (code, String::from_utf8_lossy(&body[6..6 + n]).into_owned())
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstairs_with_the_secret_activates_and_serves_io() {
    let cl = cluster(Some(SECRET)).await;
    let mut cfg = UpstairsConfig::new(cl.addrs.iter().map(|a| a.to_string()).collect(), 1);
    cfg.security = with_secret(Some(SECRET));
    let v = tokio::time::timeout(Duration::from_secs(20), upstairs::start(cfg))
        .await
        .expect("activation in time")
        .expect("activation");
    let data = Bytes::from(vec![0x5a; 4 * 512]);
    v.write(3, data.clone(), true).await.unwrap();
    assert_eq!(v.read(3, 4).await.unwrap(), data);
    v.drain(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstairs_without_the_secret_is_refused_by_name() {
    let cl = cluster(Some(SECRET)).await;
    let e = negotiate_err(cl.addrs[0], None).await;
    assert!(matches!(e, BlockError::Auth(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("requires the volume's secret") && text.contains("--secret-file"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstairs_with_another_secret_refuses_the_downstairs() {
    let cl = cluster(Some(SECRET)).await;
    // The downstairs proves itself first; with another secret its proof
    // does not check, so the upstairs never proves anything to it.
    let e = negotiate_err(cl.addrs[0], Some(OTHER)).await;
    let text = e.to_string();
    assert!(
        matches!(e, BlockError::Auth(_)) && text.contains("could not prove"),
        "{text}"
    );
    // And a volume never activates on a downstairs of another secret.
    let mut cfg = UpstairsConfig::new(cl.addrs.iter().map(|a| a.to_string()).collect(), 1);
    cfg.security = with_secret(Some(OTHER));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), upstairs::start(cfg))
            .await
            .is_err(),
        "activated with the wrong secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstairs_with_a_secret_refuses_a_downstairs_without_one() {
    let cl = cluster(None).await;
    let e = negotiate_err(cl.addrs[0], Some(SECRET)).await;
    let text = e.to_string();
    assert!(
        matches!(e, BlockError::Auth(_)) && text.contains("has no secret"),
        "{text}"
    );
}

/// A fake upstairs that knows no secret can do nothing before it proves
/// one: Hello, Activate and jobs are refused, and a forged proof is too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_accepted_before_the_proof() {
    let cl = cluster(Some(SECRET)).await;
    for first in [
        Message::Activate {
            upstairs_id: 9,
            generation: 1_000_000,
        },
        Message::Hello {
            upstairs_id: 9,
            generation: 1,
        },
        Message::Read {
            job: 1,
            deps: vec![],
            start: 0,
            count: 1,
        },
    ] {
        let mut s = TcpStream::connect(cl.addrs[0]).await.unwrap();
        s.write_all(&first.to_bytes().unwrap()).await.unwrap();
        let (_, ty, body) = raw_frame(&mut s).await;
        assert_eq!(ty, T_ERROR);
        let (code, text) = error_body(&body);
        assert_eq!(code, ErrorCode::AuthFailed as u16, "{text}");
        assert!(closed(&mut s).await, "connection left open after {first:?}");
    }
    // A forged proof.
    let mut s = TcpStream::connect(cl.addrs[0]).await.unwrap();
    let hello = Message::AuthHello {
        upstairs_id: 9,
        nonce: [7; 32],
    };
    s.write_all(&hello.to_bytes().unwrap()).await.unwrap();
    let (_, ty, _) = raw_frame(&mut s).await;
    assert_eq!(ty, kelp_block::frame::T_AUTH_CHALLENGE);
    let forged = Message::AuthProof { proof: [0; 32] };
    s.write_all(&forged.to_bytes().unwrap()).await.unwrap();
    let (_, ty, body) = raw_frame(&mut s).await;
    assert_eq!(ty, T_ERROR);
    let (code, text) = error_body(&body);
    assert_eq!(code, ErrorCode::AuthFailed as u16);
    assert!(text.contains("proof is wrong"), "{text}");
    assert!(closed(&mut s).await);
    // A huge frame before authentication is not buffered.
    let mut s = TcpStream::connect(cl.addrs[0]).await.unwrap();
    let mut big = vec![0u8; 8];
    big[0..4].copy_from_slice(&(32u32 << 20).to_le_bytes());
    big[4] = kelp_block::frame::PROTOCOL_VERSION;
    big[5] = kelp_block::frame::T_WRITE;
    s.write_all(&big).await.unwrap();
    assert!(closed(&mut s).await);
    // After all that, the rightful upstairs still activates at generation 1:
    // nothing above moved the region's generation.
    let mut cfg = UpstairsConfig::new(cl.addrs.iter().map(|a| a.to_string()).collect(), 1);
    cfg.security = with_secret(Some(SECRET));
    tokio::time::timeout(Duration::from_secs(20), upstairs::start(cfg))
        .await
        .expect("activation in time")
        .expect("activation at generation 1");
}

/// A rogue downstairs listening where a real one should be: it either
/// makes up a challenge without knowing the secret, or skips
/// authentication. The upstairs refuses both and tells it why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_downstairs_is_refused() {
    for skip_auth in [false, true] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let rogue = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (_, ty, _) = raw_frame(&mut s).await;
            assert_eq!(ty, kelp_block::frame::T_AUTH_HELLO);
            let answer = if skip_auth {
                Message::Activated { generation: 1 }
            } else {
                Message::AuthChallenge {
                    region_uuid: [1; 16],
                    nonce: [2; 32],
                    proof: [3; 32],
                }
            };
            s.write_all(&answer.to_bytes().unwrap()).await.unwrap();
            if skip_auth {
                return None;
            }
            // The upstairs says why before it hangs up.
            let (_, ty, body) = raw_frame(&mut s).await;
            assert_eq!(ty, T_ERROR);
            Some(error_body(&body))
        });
        let e = negotiate_err(addr, Some(SECRET)).await;
        assert!(matches!(e, BlockError::Auth(_)), "{e}");
        if let Some((code, text)) = rogue.await.unwrap() {
            assert_eq!(code, ErrorCode::AuthFailed as u16);
            assert!(text.contains("could not prove"), "{text}");
        }
    }
}

/// An upstairs of the previous release (protocol version 2) gets an error
/// naming both versions, in a frame its decoder reads, not a misread frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_peer_is_told_both_versions() {
    for secret in [None, Some(SECRET)] {
        let cl = cluster(secret).await;
        let mut s = TcpStream::connect(cl.addrs[0]).await.unwrap();
        let mut hello = Message::Hello {
            upstairs_id: 3,
            generation: 1,
        }
        .to_bytes()
        .unwrap();
        hello[4] = 2;
        s.write_all(&hello).await.unwrap();
        let (version, ty, body) = raw_frame(&mut s).await;
        assert_eq!((version, ty), (2, T_ERROR));
        let (code, text) = error_body(&body);
        assert_eq!(code, ErrorCode::VersionMismatch as u16);
        assert!(
            text.contains("version 3") && text.contains("version 2"),
            "{text}"
        );
        assert!(closed(&mut s).await);
    }
    // And an upstairs meeting a downstairs of another version says so.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let _ = raw_frame(&mut s).await;
        let mut ack = Message::Activated { generation: 1 }.to_bytes().unwrap();
        ack[4] = 4;
        let _ = s.write_all(&ack).await;
        let _ = raw_frame(&mut s).await;
    });
    let e = negotiate_err(addr, None).await;
    assert!(
        matches!(e, BlockError::VersionMismatch { ours: 3, theirs: 4 }),
        "{e}"
    );
    // The same frame through the streaming decoder is the same error.
    let mut ack = Message::Activated { generation: 1 }.to_bytes().unwrap();
    ack[4] = 1;
    assert!(matches!(
        FrameDecoder.decode(&mut BytesMut::from(&ack[..])),
        Err(BlockError::VersionMismatch { theirs: 1, .. })
    ));
}

/// A test CA and its certificates (kelp-net's test PKI, as PEM files in
/// a temporary directory), turned into rustls settings the way the
/// daemons build theirs.
mod pki {
    use std::sync::Arc;

    use kelp_net::test_pki::{self, Pki};
    use rustls::{ClientConfig, ServerConfig};

    pub struct Ca {
        pki: Pki,
        _dir: tempfile::TempDir,
    }

    impl Ca {
        pub fn new(_name: &str) -> Ca {
            let dir = tempfile::tempdir().unwrap();
            Ca {
                pki: test_pki::generate(dir.path()),
                _dir: dir,
            }
        }

        /// A server config with a certificate of this CA; with
        /// `client_ca`, client certificates of that CA are required.
        pub fn server(&self, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
            kelp_core::tls::server_config(
                &self.pki.server_cert,
                &self.pki.server_key,
                client_ca.map(|c| c.pki.ca.as_path()),
                &[],
            )
            .unwrap()
        }

        /// A client config trusting this CA, with a client certificate of
        /// `identity` if given.
        pub fn client(&self, identity: Option<&Ca>) -> Arc<ClientConfig> {
            let id = identity.map(|c| (c.pki.client_cert.as_path(), c.pki.client_key.as_path()));
            kelp_core::tls::client_config(&self.pki.ca, id).unwrap()
        }
    }
}

fn tls_client(config: Arc<rustls::ClientConfig>, secret: Option<&[u8]>) -> Security {
    Security {
        secret: secret.map(|s| Secret::new(s).unwrap()),
        tls: Some(config),
    }
}

/// Mutual TLS: the downstairs requires a client certificate of the CA,
/// the upstairs verifies the downstairs against it; with a secret on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_upstairs_and_downstairs() {
    let ca = pki::Ca::new("kelp test CA");
    let cl = cluster_with(downstairs::Security {
        secret: Some(Secret::new(SECRET).unwrap()),
        tls: Some(ca.server(Some(&ca))),
    })
    .await;
    let mut cfg = UpstairsConfig::new(cl.addrs.iter().map(|a| a.to_string()).collect(), 1);
    cfg.security = tls_client(ca.client(Some(&ca)), Some(SECRET));
    let v = tokio::time::timeout(Duration::from_secs(20), upstairs::start(cfg))
        .await
        .expect("activation in time")
        .expect("activation over TLS");
    let data = Bytes::from(vec![0xa5; 8 * 512]);
    v.write(0, data.clone(), true).await.unwrap();
    assert_eq!(v.read(0, 8).await.unwrap(), data);
    v.drain(Duration::from_secs(10)).await.unwrap();

    // A plain upstairs is told TLS is required.
    let e = negotiate_err(cl.addrs[0], Some(SECRET)).await;
    assert!(e.to_string().contains("requires TLS"), "{e}");
    // Without a client certificate, or with one of another CA: refused.
    let other = pki::Ca::new("another CA");
    for identity in [None, Some(&other)] {
        let sec = tls_client(ca.client(identity), Some(SECRET));
        assert!(
            negotiate(&cl.addrs[0].to_string(), 1, 1, &sec)
                .await
                .is_err(),
            "a client certificate of {:?} was accepted",
            identity.map(|_| "another CA")
        );
    }
    // A downstairs whose certificate the upstairs' CA did not sign is
    // refused (a rogue downstairs with a certificate of its own).
    let sec = tls_client(other.client(Some(&ca)), Some(SECRET));
    let e = negotiate(&cl.addrs[0].to_string(), 1, 1, &sec)
        .await
        .err()
        .expect("an unknown server certificate was accepted");
    assert!(matches!(e, BlockError::Tls(_)), "{e}");
}

/// An upstairs with TLS meeting a downstairs without it gets an error, and
/// the downstairs knows why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstairs_and_plain_downstairs_do_not_mix() {
    let ca = pki::Ca::new("kelp test CA");
    let cl = cluster(None).await;
    let sec = tls_client(ca.client(None), None);
    assert!(
        negotiate(&cl.addrs[0].to_string(), 1, 1, &sec)
            .await
            .is_err()
    );
}
