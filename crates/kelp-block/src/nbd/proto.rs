//! The NBD protocol, fixed-newstyle, as pure functions over bytes (so the
//! fuzzer and the server run the same code). Reference: the NBD protocol
//! document (`proto.md` of the NBD project).
//!
//! Handshake: the server sends `NBDMAGIC | IHAVEOPT | u16 flags`; the
//! client answers `u32 flags`, then sends options `IHAVEOPT | u32 option |
//! u32 length | data`, each answered by replies `u64 REPLY_MAGIC | u32
//! option | u32 type | u32 length | data`, until NBD_OPT_GO (or the old
//! NBD_OPT_EXPORT_NAME) starts transmission. All integers are big-endian.
//!
//! TLS (NBD_OPT_STARTTLS): the server answers ACK and both sides start a
//! TLS handshake on the same connection; option haggling then goes on
//! inside TLS, from the start (nothing said before it counts). When TLS is
//! required, every option but STARTTLS and ABORT is refused with
//! ERR_TLS_REQD before it, and EXPORT_NAME (which has no error reply)
//! closes the connection, as qemu-nbd does.
//!
//! Transmission: requests `u32 0x25609513 | u16 flags | u16 type | u64
//! cookie | u64 offset | u32 length` (+ data for WRITE); simple replies
//! `u32 0x67446698 | u32 error | u64 cookie` (+ data for a good READ).

use crate::error::BlockError;

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub const FLAG_NO_ZEROES: u16 = 2;
pub const CLIENT_NO_ZEROES: u32 = 2;

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_BLOCK_SIZE: u16 = 3;

pub const TF_HAS_FLAGS: u16 = 1;
pub const TF_READ_ONLY: u16 = 1 << 1;
pub const TF_SEND_FLUSH: u16 = 1 << 2;
pub const TF_SEND_FUA: u16 = 1 << 3;
pub const TF_SEND_TRIM: u16 = 1 << 5;
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_FLAG_FUA: u16 = 1;

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const ESHUTDOWN: u32 = 108;

/// Largest option payload we read; anything bigger closes the connection.
pub const MAX_OPTION_LEN: u32 = 64 << 10;
/// Largest READ/WRITE payload (advertised as the maximum block size).
pub const MAX_REQUEST_LEN: u32 = 32 << 20;

/// What is exported.
#[derive(Debug, Clone)]
pub struct Export {
    pub name: String,
    pub size: u64,
    pub block_size: u32,
    /// A snapshot: NBD_FLAG_READ_ONLY, and only its own name selects it.
    pub read_only: bool,
}

impl Export {
    pub fn transmission_flags(&self) -> u16 {
        if self.read_only {
            return TF_HAS_FLAGS | TF_READ_ONLY | TF_CAN_MULTI_CONN;
        }
        TF_HAS_FLAGS
            | TF_SEND_FLUSH
            | TF_SEND_FUA
            | TF_SEND_TRIM
            | TF_SEND_WRITE_ZEROES
            | TF_CAN_MULTI_CONN
    }

    /// The empty name selects the default (only) writable export.
    fn matches(&self, name: &[u8]) -> bool {
        (name.is_empty() && !self.read_only) || name == self.name.as_bytes()
    }
}

/// The server's opening bytes.
pub fn greeting() -> Vec<u8> {
    let mut b = Vec::with_capacity(18);
    b.extend_from_slice(&NBDMAGIC.to_be_bytes());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// Where a connection's handshake stands with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// The server has no certificate: STARTTLS is unsupported.
    Unavailable,
    /// Offered; a client that does not take it is served in the clear.
    Offered,
    /// Offered and required: nothing but STARTTLS and ABORT before it.
    Required,
    /// The connection is encrypted.
    Active,
}

/// What to do after an option.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send the bytes and read the next option.
    Continue(Vec<u8>),
    /// Send the bytes (the STARTTLS ACK), run the TLS handshake, and read
    /// the next option over TLS.
    StartTls(Vec<u8>),
    /// Send the bytes and enter transmission.
    Transmit(Vec<u8>),
    /// Send the bytes (maybe none) and close.
    Close(Vec<u8>),
}

pub fn option_reply(out: &mut Vec<u8>, opt: u32, ty: u32, data: &[u8]) {
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Parses NBD_OPT_INFO/GO data: `u32 name length | name | u16 n | n × u16`.
pub fn parse_info_request(data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let n = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let name = data.get(4..4usize.checked_add(n)?)?;
    let rest = &data[4 + n..];
    let k = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
    let reqs = rest.get(2..)?;
    if reqs.len() != 2 * k {
        return None;
    }
    Some((
        name,
        reqs.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    ))
}

/// Handles one option (`data` is its payload, at most MAX_OPTION_LEN) in
/// TLS state `tls`, for a server of one export.
pub fn handle_option(opt: u32, data: &[u8], export: &Export, no_zeroes: bool, tls: Tls) -> Next {
    handle_option_in(opt, data, std::slice::from_ref(export), no_zeroes, tls).0
}

/// Handles one option for a server of several exports (the snapshots);
/// when it starts transmission, also returns the index of the export the
/// client chose.
pub fn handle_option_in(
    opt: u32,
    data: &[u8],
    exports: &[Export],
    no_zeroes: bool,
    tls: Tls,
) -> (Next, Option<usize>) {
    let find = |name: &[u8]| exports.iter().position(|e| e.matches(name));
    let mut out = Vec::new();
    if tls == Tls::Required && !matches!(opt, OPT_STARTTLS | OPT_ABORT) {
        if opt == OPT_EXPORT_NAME {
            // No error reply exists for EXPORT_NAME: close.
            return (Next::Close(out), None);
        }
        option_reply(
            &mut out,
            opt,
            REP_ERR_TLS_REQD,
            b"TLS is required: send NBD_OPT_STARTTLS first",
        );
        return (Next::Continue(out), None);
    }
    match opt {
        OPT_STARTTLS => {
            match tls {
                Tls::Unavailable => {
                    option_reply(&mut out, opt, REP_ERR_UNSUP, b"TLS is not configured");
                    return (Next::Continue(out), None);
                }
                Tls::Active => {
                    option_reply(&mut out, opt, REP_ERR_INVALID, b"TLS is already active");
                    return (Next::Continue(out), None);
                }
                Tls::Offered | Tls::Required => {}
            }
            if !data.is_empty() {
                option_reply(&mut out, opt, REP_ERR_INVALID, b"STARTTLS takes no data");
                return (Next::Continue(out), None);
            }
            option_reply(&mut out, opt, REP_ACK, &[]);
            (Next::StartTls(out), None)
        }
        OPT_EXPORT_NAME => {
            let Some(i) = find(data) else {
                // The protocol has no error reply here: close.
                return (Next::Close(out), None);
            };
            let export = &exports[i];
            out.extend_from_slice(&export.size.to_be_bytes());
            out.extend_from_slice(&export.transmission_flags().to_be_bytes());
            if !no_zeroes {
                out.extend_from_slice(&[0u8; 124]);
            }
            (Next::Transmit(out), Some(i))
        }
        OPT_ABORT => {
            option_reply(&mut out, opt, REP_ACK, &[]);
            (Next::Close(out), None)
        }
        OPT_LIST => {
            if !data.is_empty() {
                option_reply(&mut out, opt, REP_ERR_INVALID, b"LIST takes no data");
                return (Next::Continue(out), None);
            }
            for export in exports {
                let mut d = Vec::new();
                d.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                d.extend_from_slice(export.name.as_bytes());
                option_reply(&mut out, opt, REP_SERVER, &d);
            }
            option_reply(&mut out, opt, REP_ACK, &[]);
            (Next::Continue(out), None)
        }
        OPT_INFO | OPT_GO => {
            let Some((name, reqs)) = parse_info_request(data) else {
                option_reply(&mut out, opt, REP_ERR_INVALID, b"malformed request");
                return (Next::Continue(out), None);
            };
            let Some(i) = find(name) else {
                option_reply(&mut out, opt, REP_ERR_UNKNOWN, b"no such export");
                return (Next::Continue(out), None);
            };
            let export = &exports[i];
            let mut info = Vec::new();
            info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
            info.extend_from_slice(&export.size.to_be_bytes());
            info.extend_from_slice(&export.transmission_flags().to_be_bytes());
            option_reply(&mut out, opt, REP_INFO, &info);
            // Block sizes are always offered: minimum = the volume's block
            // size (smaller IO works, by read-modify-write, but is slow).
            let mut bsz = Vec::new();
            bsz.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
            bsz.extend_from_slice(&export.block_size.to_be_bytes());
            bsz.extend_from_slice(&export.block_size.max(4096).to_be_bytes());
            bsz.extend_from_slice(&MAX_REQUEST_LEN.to_be_bytes());
            option_reply(&mut out, opt, REP_INFO, &bsz);
            if reqs.contains(&INFO_NAME) {
                let mut n = INFO_NAME.to_be_bytes().to_vec();
                n.extend_from_slice(export.name.as_bytes());
                option_reply(&mut out, opt, REP_INFO, &n);
            }
            option_reply(&mut out, opt, REP_ACK, &[]);
            if opt == OPT_GO {
                (Next::Transmit(out), Some(i))
            } else {
                (Next::Continue(out), None)
            }
        }
        _ => {
            option_reply(&mut out, opt, REP_ERR_UNSUP, b"unsupported option");
            (Next::Continue(out), None)
        }
    }
}

/// Parses an option header: `IHAVEOPT | u32 option | u32 length`.
pub fn parse_option_header(b: &[u8; 16]) -> Result<(u32, u32), BlockError> {
    let magic = u64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
    if magic != IHAVEOPT {
        return Err(BlockError::protocol("bad option magic"));
    }
    let opt = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let len = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    if len > MAX_OPTION_LEN {
        return Err(BlockError::protocol(format!(
            "option length {len} too large"
        )));
    }
    Ok((opt, len))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub cmd: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

pub const REQUEST_LEN: usize = 28;

pub fn parse_request(b: &[u8; REQUEST_LEN]) -> Result<Request, BlockError> {
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != REQUEST_MAGIC {
        return Err(BlockError::protocol(format!(
            "bad request magic {magic:08x}"
        )));
    }
    let u64at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_be_bytes(a)
    };
    Ok(Request {
        flags: u16::from_be_bytes([b[4], b[5]]),
        cmd: u16::from_be_bytes([b[6], b[7]]),
        cookie: u64at(8),
        offset: u64at(16),
        len: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
    })
}

pub fn simple_reply(error: u32, cookie: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b
}

/// The one place block errors become NBD errors.
pub fn errno(e: &BlockError) -> u32 {
    match e {
        BlockError::OutOfRange { .. } | BlockError::NoSpace(_) => ENOSPC,
        BlockError::BadLength { .. } | BlockError::BadOptions(_) | BlockError::Protocol(_) => {
            EINVAL
        }
        BlockError::ReadOnly => EPERM,
        BlockError::Shutdown => ESHUTDOWN,
        e if e.is_fenced() => EPERM,
        _ => EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots: only their own names select them, read-only.
    #[test]
    fn snapshot_exports() {
        let snaps: Vec<Export> = ["s1", "s2"]
            .iter()
            .map(|n| Export {
                name: n.to_string(),
                size: 1 << 20,
                block_size: 512,
                read_only: true,
            })
            .collect();
        let go = |name: &[u8]| {
            let mut d = (name.len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(name);
            d.extend_from_slice(&0u16.to_be_bytes());
            d
        };
        let (next, i) = handle_option_in(OPT_GO, &go(b"s2"), &snaps, true, Tls::Unavailable);
        assert_eq!(i, Some(1));
        let Next::Transmit(out) = next else {
            panic!("{next:?}")
        };
        // The first reply is INFO_EXPORT: size, then flags with READ_ONLY.
        let flags = u16::from_be_bytes([out[30], out[31]]);
        assert_ne!(flags & TF_READ_ONLY, 0);
        assert_eq!(flags & TF_SEND_FLUSH, 0);
        for name in [&b"nope"[..], b""] {
            let (next, i) = handle_option_in(OPT_GO, &go(name), &snaps, true, Tls::Unavailable);
            assert_eq!(i, None);
            let Next::Continue(out) = next else {
                panic!("{next:?}")
            };
            assert_eq!(reply_type(&out), REP_ERR_UNKNOWN);
        }
        let (next, _) = handle_option_in(OPT_EXPORT_NAME, b"zz", &snaps, true, Tls::Unavailable);
        assert_eq!(next, Next::Close(vec![]));
        let (next, i) = handle_option_in(OPT_EXPORT_NAME, b"s1", &snaps, true, Tls::Unavailable);
        assert!(matches!(next, Next::Transmit(_)) && i == Some(0));
    }

    fn export() -> Export {
        Export {
            name: "vol".into(),
            size: 1 << 20,
            block_size: 512,
            read_only: false,
        }
    }

    #[test]
    fn go_and_info() {
        let mut data = vec![0, 0, 0, 3];
        data.extend_from_slice(b"vol");
        data.extend_from_slice(&[0, 1, 0, 3]);
        let Next::Transmit(out) = handle_option(OPT_GO, &data, &export(), true, Tls::Unavailable)
        else {
            panic!()
        };
        // First reply: INFO EXPORT with size and flags.
        assert_eq!(&out[0..8], &REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[12..16], &REP_INFO.to_be_bytes());
        assert_eq!(&out[16..20], &12u32.to_be_bytes());
        assert_eq!(&out[22..30], &(1u64 << 20).to_be_bytes());
        assert!(matches!(
            handle_option(OPT_INFO, &data, &export(), true, Tls::Unavailable),
            Next::Continue(_)
        ));
        data[6] = b'x';
        let Next::Continue(out) = handle_option(OPT_GO, &data, &export(), true, Tls::Unavailable)
        else {
            panic!()
        };
        assert_eq!(&out[12..16], &REP_ERR_UNKNOWN.to_be_bytes());
        let Next::Continue(out) =
            handle_option(OPT_GO, &[0, 0, 0, 9], &export(), true, Tls::Unavailable)
        else {
            panic!()
        };
        assert_eq!(&out[12..16], &REP_ERR_INVALID.to_be_bytes());
    }

    #[test]
    fn export_name_list_abort() {
        let Next::Transmit(out) =
            handle_option(OPT_EXPORT_NAME, b"", &export(), false, Tls::Unavailable)
        else {
            panic!()
        };
        assert_eq!(out.len(), 8 + 2 + 124);
        assert_eq!(
            handle_option(OPT_EXPORT_NAME, b"nope", &export(), false, Tls::Unavailable),
            Next::Close(vec![])
        );
        let Next::Continue(out) = handle_option(OPT_LIST, b"", &export(), false, Tls::Unavailable)
        else {
            panic!()
        };
        assert_eq!(&out[12..16], &REP_SERVER.to_be_bytes());
        assert!(matches!(
            handle_option(OPT_ABORT, b"", &export(), false, Tls::Unavailable),
            Next::Close(_)
        ));
        let Next::Continue(out) = handle_option(99, b"", &export(), false, Tls::Unavailable) else {
            panic!()
        };
        assert_eq!(&out[12..16], &REP_ERR_UNSUP.to_be_bytes());
    }

    fn reply_type(out: &[u8]) -> u32 {
        u32::from_be_bytes([out[12], out[13], out[14], out[15]])
    }

    #[test]
    fn starttls_in_each_tls_state() {
        let e = export();
        let Next::Continue(out) = handle_option(OPT_STARTTLS, b"", &e, true, Tls::Unavailable)
        else {
            panic!()
        };
        assert_eq!(reply_type(&out), REP_ERR_UNSUP);
        for tls in [Tls::Offered, Tls::Required] {
            // Golden: the ACK is a bare reply header.
            let mut ack = REPLY_MAGIC.to_be_bytes().to_vec();
            ack.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0]);
            assert_eq!(
                handle_option(OPT_STARTTLS, b"", &e, true, tls),
                Next::StartTls(ack)
            );
            let Next::Continue(out) = handle_option(OPT_STARTTLS, b"x", &e, true, tls) else {
                panic!()
            };
            assert_eq!(reply_type(&out), REP_ERR_INVALID);
        }
        let Next::Continue(out) = handle_option(OPT_STARTTLS, b"", &e, true, Tls::Active) else {
            panic!()
        };
        assert_eq!(reply_type(&out), REP_ERR_INVALID);
    }

    #[test]
    fn tls_required_refuses_everything_but_starttls_and_abort() {
        let e = export();
        // GO/INFO of the default export, no info requests.
        let go = vec![0u8; 6];
        for opt in [OPT_GO, OPT_INFO, OPT_LIST, 99] {
            let Next::Continue(out) = handle_option(opt, &go, &e, true, Tls::Required) else {
                panic!("option {opt}")
            };
            assert_eq!(reply_type(&out), REP_ERR_TLS_REQD, "option {opt}");
            assert_eq!(&out[8..12], &opt.to_be_bytes());
        }
        assert_eq!(
            handle_option(OPT_EXPORT_NAME, b"", &e, true, Tls::Required),
            Next::Close(vec![])
        );
        assert!(matches!(
            handle_option(OPT_ABORT, b"", &e, true, Tls::Required),
            Next::Close(_)
        ));
        // Offered but not required: a plain client is served; once TLS is
        // active, everything is.
        for tls in [Tls::Offered, Tls::Active] {
            assert!(matches!(
                handle_option(OPT_GO, &go, &e, true, tls),
                Next::Transmit(_)
            ));
        }
    }

    #[test]
    fn request_golden() {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&1u16.to_be_bytes());
        b[6..8].copy_from_slice(&CMD_WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..28].copy_from_slice(&512u32.to_be_bytes());
        assert_eq!(
            parse_request(&b).unwrap(),
            Request {
                flags: 1,
                cmd: 1,
                cookie: 7,
                offset: 4096,
                len: 512
            }
        );
        b[0] = 0;
        assert!(parse_request(&b).is_err());
    }
}
