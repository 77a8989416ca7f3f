//! `keel-kv serve` with peer traffic over mutual TLS, as an operator runs
//! it: three real processes with certificates from one CA (generated at
//! test time, each naming its node id, which the members require) elect a
//! leader and replicate writes; a fourth whose certificate comes from
//! another CA cannot get a vote or an entry.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel_kv::client::KvClient;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Authority { cert, key }
}

/// Writes node `id`'s certificate (issued by `issuer`, naming 127.0.0.1
/// and `keel-node-<id>`), key and the CA it trusts; returns the
/// `--peer-tls-*` arguments, node names required.
fn tls_arguments(directory: &Path, id: u64, issuer: &Authority) -> Vec<String> {
    let key = KeyPair::generate().unwrap();
    let names = vec!["127.0.0.1".to_string(), format!("keel-node-{id}")];
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("keel-kv node {id}"));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
    let path = |name: &str| -> PathBuf { directory.join(format!("node-{id}-{name}.pem")) };
    std::fs::write(path("cert"), cert.pem()).unwrap();
    std::fs::write(path("key"), key.serialize_pem()).unwrap();
    std::fs::write(path("ca"), issuer.cert.pem()).unwrap();
    [
        ("--peer-tls-cert", "cert"),
        ("--peer-tls-key", "key"),
        ("--peer-tls-ca", "ca"),
    ]
    .iter()
    .flat_map(|(flag, name)| [flag.to_string(), path(name).display().to_string()])
    .chain(["--peer-tls-require-node-names".to_string()])
    .collect()
}

/// A `keel-kv serve` process, killed when dropped.
struct Server {
    child: Child,
    client_addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(directory: &Path, id: u64, peer_port: u16, initial_cluster: &str, tls: Vec<String>) -> Server {
    let client_addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(directory.join(format!("node-{id}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keel-kv"))
        .args(["serve", "--id", &id.to_string(), "--data-dir"])
        .arg(directory.join(format!("node-{id}")))
        .args(["--peer-addr", &format!("127.0.0.1:{peer_port}")])
        .args(["--client-addr", &client_addr])
        .args(["--initial-cluster", initial_cluster])
        .args(["--election-timeout-ms", "300", "--heartbeat-ms", "50"])
        .args(["--log-format", "json"])
        .args(tls)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Server { child, client_addr }
}

async fn status(client: &KvClient, server: &Server, path: &str) -> Option<(u16, String)> {
    let response = client
        .request_to(&server.client_addr, Method::GET, path, Bytes::new())
        .await
        .ok()?;
    Some((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_and_a_node_with_a_foreign_certificate_stays_out() {
    let directory = tempfile::tempdir().unwrap();
    let ca = authority("keel-kv test CA");
    let stranger_ca = authority("another CA");
    let peer_ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let initial_cluster: Vec<String> = (1..=3)
        .map(|id| format!("{id}=127.0.0.1:{}", peer_ports[id - 1]))
        .collect();
    let initial_cluster = initial_cluster.join(",");
    let servers: Vec<Server> = (1..=3u64)
        .map(|id| {
            let tls = tls_arguments(directory.path(), id, &ca);
            serve(
                directory.path(),
                id,
                peer_ports[id as usize - 1],
                &initial_cluster,
                tls,
            )
        })
        .collect();
    let client = KvClient::new(&[], Duration::from_secs(2));

    // A write through every node (followers forward to the leader) and a
    // linearizable read of each back from another node.
    for (position, server) in servers.iter().enumerate() {
        let path = format!("/v1/kv/tls-{position}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let written = client
                .request_to(&server.client_addr, Method::PUT, &path, Bytes::from("over tls"))
                .await;
            if matches!(&written, Ok(response) if response.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no write through node {}: {written:?}",
                position + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reader = &servers[(position + 1) % servers.len()];
        let (code, body) = status(&client, reader, &path).await.unwrap();
        assert_eq!((code, body.as_str()), (200, "over tls"));
    }

    // A node whose certificate is from another CA, claiming to be a
    // founder of the same cluster: its peers refuse its connections, so it
    // never hears of a leader and never gets an entry.
    let stranger_tls = tls_arguments(directory.path(), 4, &stranger_ca);
    let with_stranger = format!("{initial_cluster},4=127.0.0.1:{}", peer_ports[3]);
    let stranger = serve(directory.path(), 4, peer_ports[3], &with_stranger, stranger_tls);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, body) = status(&client, &stranger, "/v1/kv/tls-0?consistency=stale")
        .await
        .unwrap();
    assert_ne!(
        (code, body.as_str()),
        (200, "over tls"),
        "the stranger holds the cluster's data"
    );
    let (code, _) = status(&client, &stranger, "/v1/kv/tls-0").await.unwrap();
    assert_ne!(code, 200, "the stranger served a linearizable read");
}
