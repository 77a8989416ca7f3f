//! Mutual TLS with certificates generated at test time: peers with
//! certificates from the cluster's CA talk; a peer whose certificate comes
//! from another CA, or that speaks plain TCP, is refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config, heartbeat, start};
use keel::NodeId;
use keel_net::{NetError, Network, NetworkConfig, TlsConfig};
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
    named_node_tls(dir, name, issuer, trusted, &[])
}

/// [`node_tls`] with extra DNS names in the certificate (node names).
fn named_node_tls(
    dir: &Path,
    name: &str,
    issuer: &Authority,
    trusted: &Authority,
    extra_names: &[String],
) -> TlsConfig {
    let key = KeyPair::generate().expect("node key");
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend_from_slice(extra_names);
    let mut params = CertificateParams::new(names).expect("node params");
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
        require_node_names: false,
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
    assert_nodes_talk(a_config, b_config).await;
}

/// Starts nodes 1 and 2 from these configs and checks that a message gets
/// through in each direction.
async fn assert_nodes_talk(a_config: NetworkConfig, b_config: NetworkConfig) {
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
    // Node 2 is a member: only the certificate keeps the intruder out.
    a.network.set_members([NodeId::new(2)]);
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
    a.network.set_members([NodeId::new(2)]);
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
        require_node_names: false,
    });
    let (sender, _inbound) = tokio::sync::mpsc::channel(1);
    let error = Network::start(settings, sender).await.err().expect("start fails");
    assert!(matches!(error, NetError::Tls { .. }), "{error}");
}

/// A TLS config for node `id` whose certificate names `named` (usually
/// itself), requiring node names of its peers.
fn bound_tls(dir: &Path, id: u64, named: u64, ca: &Authority) -> TlsConfig {
    let name = TlsConfig::node_name(NodeId::new(named));
    let mut tls = named_node_tls(dir, &format!("node-{id}"), ca, ca, &[name]);
    tls.require_node_names = true;
    tls
}

#[tokio::test]
async fn certificates_that_name_their_nodes_let_them_talk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = authority("cluster CA");
    let mut a_config = config(7, 1, dir.path());
    a_config.tls = Some(bound_tls(dir.path(), 1, 1, &ca));
    let mut b_config = config(7, 2, dir.path());
    b_config.tls = Some(bound_tls(dir.path(), 2, 2, &ca));
    assert_nodes_talk(a_config, b_config).await;
}

#[tokio::test]
async fn a_member_cannot_pose_as_another_with_its_valid_certificate() {
    // Goal: node 3 holds a certificate from the cluster CA, but it names
    // node 3. Posing as node 2, it is refused when it dials node 1; and
    // node 1, dialling "node 2" at node 3's address, refuses the answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = authority("cluster CA");
    let mut a_config = config(7, 1, dir.path());
    a_config.tls = Some(bound_tls(dir.path(), 1, 1, &ca));
    let mut impostor_config = config(7, 2, dir.path());
    impostor_config.tls = Some(bound_tls(dir.path(), 2, 3, &ca));
    let mut a = start(a_config).await;
    let mut impostor = start(impostor_config).await;
    // Node 2 is a member of `a`'s cluster: only its certificate is wrong.
    a.network.set_members([NodeId::new(2)]);
    impostor.network.set_peer(NodeId::new(1), a.addr());
    impostor.network.send(heartbeat(2, 1, 1));
    impostor.expect_unreachable(1).await;
    a.expect_no_message(Duration::from_millis(200)).await;
    a.network.set_peer(NodeId::new(2), impostor.addr());
    a.network.send(heartbeat(1, 2, 1));
    a.expect_unreachable(2).await;
    impostor.expect_no_message(Duration::from_millis(200)).await;
    a.network.shutdown().await;
    impostor.network.shutdown().await;
}
