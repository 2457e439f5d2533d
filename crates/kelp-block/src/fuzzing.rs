//! Entry points shared by the cargo-fuzz targets (`/fuzz`) and the corpus
//! replay test. Each must never panic, whatever the input.

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameDecoder, FrameReader, Message};
use crate::nbd::proto;

/// Feeds bytes to the streaming frame decoder in chunks whose sizes come
/// from the first byte; every decoded message must re-encode to a frame
/// that decodes to the same message. Then reads the same bytes with the
/// async `FrameReader`, in pieces of that size and with the threshold for
/// reading a frame into its own buffer taken from the first byte too: it
/// must yield the same messages, and fail where the decoder failed.
pub fn frame_decode(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = (chunk as usize % 64) + 1;
    let mut dec = FrameDecoder;
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    let mut failed = false;
    'feed: for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    let again = m.to_bytes().expect("decoded message re-encodes");
                    assert_eq!(Message::decode(Bytes::from(again)).ok().as_ref(), Some(&m));
                    decoded.push(m);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        let (mut tx, rx) = tokio::io::duplex(chunk);
        let input = rest.to_vec();
        let feeder = async move {
            use tokio::io::AsyncWriteExt;
            let _ = tx.write_all(&input).await;
        };
        let reader = async move {
            let mut r = FrameReader::new(rx);
            r.set_large_frame(chunk * 4);
            let mut got = Vec::new();
            loop {
                match r.next().await {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => return (got, false),
                    Err(_) => return (got, true),
                }
            }
        };
        let ((), (got, reader_failed)) = tokio::join!(feeder, reader);
        assert_eq!(got, decoded, "the reader and the decoder agree");
        // The decoder fails on a bad frame; the reader also fails on a
        // frame cut short by the end of the input, which the decoder just
        // leaves waiting for more bytes.
        assert!(
            reader_failed || !failed,
            "the reader fails where the decoder did"
        );
        assert!(!reader_failed || failed || !buf.is_empty());
    });
}

/// Runs the NBD handshake on a byte stream (client flags, then options) as
/// the server would, then parses what follows as transmission requests.
/// The client flags' top byte picks the server's TLS setting; after a
/// STARTTLS the rest is taken as what the client says inside TLS.
pub fn nbd_handshake(data: &[u8]) {
    let export = proto::Export {
        name: "kelp".into(),
        size: 1 << 30,
        block_size: 4096,
        read_only: false,
    };
    let Some(flags) = data.get(0..4) else { return };
    let no_zeroes =
        u32::from_be_bytes([flags[0], flags[1], flags[2], flags[3]]) & proto::CLIENT_NO_ZEROES != 0;
    let mut tls = match flags[0] % 3 {
        0 => proto::Tls::Unavailable,
        1 => proto::Tls::Offered,
        _ => proto::Tls::Required,
    };
    let mut rest = &data[4..];
    loop {
        let Some(h) = rest.get(0..16) else { return };
        let mut hdr = [0u8; 16];
        hdr.copy_from_slice(h);
        let Ok((opt, len)) = proto::parse_option_header(&hdr) else {
            return;
        };
        let Some(payload) = rest.get(16..16 + len as usize) else {
            return;
        };
        rest = &rest[16 + len as usize..];
        match proto::handle_option(opt, payload, &export, no_zeroes, tls) {
            proto::Next::Continue(_) => continue,
            proto::Next::StartTls(_) => {
                assert!(matches!(tls, proto::Tls::Offered | proto::Tls::Required));
                tls = proto::Tls::Active;
            }
            proto::Next::Close(_) => return,
            proto::Next::Transmit(_) => {
                assert_ne!(tls, proto::Tls::Required, "transmission without TLS");
                break;
            }
        }
    }
    for r in rest.chunks_exact(proto::REQUEST_LEN) {
        let mut b = [0u8; proto::REQUEST_LEN];
        b.copy_from_slice(r);
        if proto::parse_request(&b).is_err() {
            return;
        }
    }
}

/// Parses a `keys.psk` file (`--nbd-tls-psk`). Whatever it accepts holds
/// at least one username, none empty or with a colon.
pub fn psk_keys_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = crate::nbd::psk::PskKeys::parse(text) {
        assert!(!keys.is_empty());
        for u in keys.usernames() {
            assert!(!u.is_empty() && !u.contains(':'));
        }
    }
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Target name -> entry point, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("block_frame_decode", frame_decode),
    ("nbd_handshake", nbd_handshake),
    ("psk_keys_parse", psk_keys_parse),
    ("send_stream_decode", send_stream_decode),
    ("snapshot_files_decode", snapshot_files_decode),
];

/// The snapshot layer's files and tokens, chosen by the first byte: the
/// snapshot catalog, a receive state file, a resume token, a saved-version
/// file (opened from an in-memory disk, every version read back and
/// checked against its context), an extent slot context, a linked clone's
/// `origin.kelp` and an origin's clone hold.
pub fn snapshot_files_decode(data: &[u8]) {
    use kelp_region::catalog::Catalog;
    use kelp_region::saved::{SavedStore, saved_path};
    use kelp_region::transfer::{ReceiveState, ResumeToken};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(c) = Catalog::decode(rest) {
                assert_eq!(Catalog::decode(&c.encode()).ok(), Some(c));
            }
        }
        1 => {
            if let Ok(s) = ReceiveState::decode(rest) {
                assert_eq!(ReceiveState::decode(&s.encode()).ok(), Some(s));
            }
        }
        2 => {
            if let Ok(t) = std::str::from_utf8(rest).map(ResumeToken::decode)
                && let Ok(t) = t
            {
                assert_eq!(ResumeToken::decode(&t.encode()).ok(), Some(t));
            }
        }
        3 => {
            let st = kelp_storage::Storage::new(kelp_storage::Memory::new());
            let ext = std::path::Path::new("/e.ext");
            let Ok(f) = st.open(&saved_path(ext), kelp_storage::Open::CREATE_NEW) else {
                return;
            };
            let _ = f.write_all_at(rest, 0);
            drop(f);
            if let Ok(Some(s)) = SavedStore::open(&st, ext, 0, 512, 64, false) {
                let mut buf = vec![0u8; 512];
                for (b, v) in s.iter() {
                    assert!(b < 64);
                    s.read(v, &mut buf).expect("a scanned version reads");
                    assert!(v.context().verify(&buf), "a scanned version checks");
                }
            }
        }
        5 => {
            use kelp_region::link::Origin;
            if let Ok(o) = Origin::decode(rest) {
                assert_eq!(
                    o.encode().ok().and_then(|b| Origin::decode(&b).ok()),
                    Some(o)
                );
            }
        }
        6 => {
            use kelp_region::link::Hold;
            if let Ok(h) = Hold::decode(rest) {
                assert_eq!(h.encode().ok().and_then(|b| Hold::decode(&b).ok()), Some(h));
            }
        }
        _ => {
            if let Some(c) = kelp_region::context::SlotCtx::decode(rest) {
                assert_eq!(kelp_region::context::SlotCtx::decode(&c.encode()), Some(c));
            }
        }
    }
}

/// Decodes a snapshot send stream (kelp-region `stream.rs`) to its end;
/// what decodes must re-encode to the same records.
pub fn send_stream_decode(data: &[u8]) {
    kelp_region::stream::fuzz_decode(data);
}
