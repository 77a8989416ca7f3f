//! Mutual TLS with certificates generated at test time: peers with
//! certificates from the cluster's CA talk; a peer whose certificate comes
//! from another CA, or that speaks plain TCP, is refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config, heartbeat, start};
use keel::NodeId;
use keel_net::{NetError, Network, TlsConfig};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    Authority { cert, key }
}

/// Writes a node certificate issued by `issuer` and returns the TLS config
/// that trusts `trusted`.
fn node_tls(dir: &Path, name: &str, issuer: &Authority, trusted: &Authority) -> TlsConfig {
    let key = KeyPair::generate().expect("node key");
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("node params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("node certificate");
    let tls = TlsConfig {
        cert_path: dir.join(format!("{name}.crt")),
        key_path: dir.join(format!("{name}.key")),
        ca_path: dir.join(format!("{name}-ca.crt")),
    };
    std::fs::write(&tls.cert_path, cert.pem()).expect("write cert");
    std::fs::write(&tls.key_path, key.serialize_pem()).expect("write key");
    std::fs::write(&tls.ca_path, trusted.cert.pem()).expect("write CA");
    tls
}

#[tokio::test]
async fn mutual_tls_carries_messages_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = authority("cluster CA");
    let mut a_config = config(7, 1, dir.path());
    a_config.tls = Some(node_tls(dir.path(), "a", &ca, &ca));
    let mut b_config = config(7, 2, dir.path());
    b_config.tls = Some(node_tls(dir.path(), "b", &ca, &ca));
    let mut a = start(a_config).await;
    let mut b = start(b_config).await;
    a.network.set_peer(NodeId::new(2), b.addr());
    b.network.set_peer(NodeId::new(1), a.addr());
    a.network.send(heartbeat(1, 2, 5));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 5));
    b.network.send(heartbeat(2, 1, 6));
    assert_eq!(a.expect_message().await, heartbeat(2, 1, 6));
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    // Goal: the intruder trusts the cluster CA (so it accepts the server),
    // but its own certificate comes from another CA: the server refuses it.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = authority("cluster CA");
    let rogue = authority("rogue CA");
    let mut a_config = config(7, 1, dir.path());
    a_config.tls = Some(node_tls(dir.path(), "a", &ca, &ca));
    let mut intruder_config = config(7, 2, dir.path());
    intruder_config.tls = Some(node_tls(dir.path(), "intruder", &rogue, &ca));
    let mut a = start(a_config).await;
    let mut intruder = start(intruder_config).await;
    intruder.network.set_peer(NodeId::new(1), a.addr());
    intruder.network.send(heartbeat(2, 1, 1));
    intruder.expect_unreachable(1).await;
    a.expect_no_message(Duration::from_millis(200)).await;
    a.network.shutdown().await;
    intruder.network.shutdown().await;
}

#[tokio::test]
async fn a_plain_tcp_peer_is_refused_by_a_tls_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = authority("cluster CA");
    let mut a_config = config(7, 1, dir.path());
    a_config.tls = Some(node_tls(dir.path(), "a", &ca, &ca));
    let mut a = start(a_config).await;
    let mut plain = start(config(7, 2, dir.path())).await;
    plain.network.set_peer(NodeId::new(1), a.addr());
    plain.network.send(heartbeat(2, 1, 1));
    plain.expect_unreachable(1).await;
    a.expect_no_message(Duration::from_millis(200)).await;
    a.network.shutdown().await;
    plain.network.shutdown().await;
}

#[tokio::test]
async fn missing_tls_files_are_a_start_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = config(7, 1, dir.path());
    settings.tls = Some(TlsConfig {
        cert_path: dir.path().join("none.crt"),
        key_path: dir.path().join("none.key"),
        ca_path: dir.path().join("none-ca.crt"),
    });
    let (sender, _inbound) = tokio::sync::mpsc::channel(1);
    let error = Network::start(settings, sender).await.err().expect("start fails");
    assert!(matches!(error, NetError::Tls { .. }), "{error}");
}
