//! A throwaway certificate authority for tests (feature `test-pki`): a CA,
//! a server certificate for `localhost` and `127.0.0.1`, and a client
//! certificate, written as PEM files under the names QEMU's
//! `tls-creds-x509` expects in its directory, so one directory serves
//! Kelp, curl, `weed`, `qemu-img` and `nbdinfo` alike. The CA's key is
//! not kept.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files of one generated PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Generates a new CA and its two leaf certificates into `dir`.
pub fn generate(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("PKI directory");
    let valid_from = rcgen::date_time_ymd(2024, 1, 1);
    let valid_to = rcgen::date_time_ymd(2099, 1, 1);

    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Kelp test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    ca.not_before = valid_from;
    ca.not_after = valid_to;
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |name: &str, usage: &[ExtendedKeyUsagePurpose]| {
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = usage.to_vec();
        p.not_before = valid_from;
        p.not_after = valid_to;
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    };
    // Servers dial each other with their own certificate, as SeaweedFS
    // does when one file is shared: it serves both purposes.
    let (server_pem, server_key) = leaf(
        "kelp-server",
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_pem, client_key) = leaf("kelp-client", &[ExtendedKeyUsagePurpose::ClientAuth]);

    let pki = Pki {
        dir: dir.to_path_buf(),
        ca: dir.join("ca-cert.pem"),
        server_cert: dir.join("server-cert.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client-cert.pem"),
        client_key: dir.join("client-key.pem"),
    };
    let write = |p: &Path, s: &str| std::fs::write(p, s).expect("PKI file");
    write(&pki.ca, &ca_cert.pem());
    write(&pki.server_cert, &server_pem);
    write(&pki.server_key, &server_key);
    write(&pki.client_cert, &client_pem);
    write(&pki.client_key, &client_key);
    pki
}
