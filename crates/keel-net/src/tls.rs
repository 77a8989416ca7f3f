//! Mutual TLS with rustls: loading PEM files and building both ends.

use std::path::Path;
use std::sync::Arc;

use keel::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{NetError, TlsConfig};

/// Both ends of mutual TLS, built once from the configured files.
#[derive(Clone)]
pub(crate) struct TlsContext {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
    /// `TlsConfig::require_node_names`.
    pub(crate) require_node_names: bool,
}

/// Whether `certificates` (a peer's chain, leaf first) vouch for node `id`:
/// the leaf names [`TlsConfig::node_name`]. The chain itself was already
/// verified by the TLS handshake.
pub(crate) fn names_node(certificates: Option<&[CertificateDer<'_>]>, id: NodeId) -> bool {
    let Some(leaf) = certificates.and_then(|chain| chain.first()) else {
        return false;
    };
    let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(TlsConfig::node_name(id)) else {
        return false;
    };
    leaf.verify_is_valid_for_subject_name(&name).is_ok()
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> NetError {
    NetError::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl TlsContext {
    pub(crate) fn load(config: &TlsConfig) -> Result<TlsContext, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_file_iter(&config.cert_path)
            .map_err(|error| tls_error(&config.cert_path, error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| tls_error(&config.cert_path, error))?;
        if certs.is_empty() {
            return Err(tls_error(&config.cert_path, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(&config.key_path)
            .map_err(|error| tls_error(&config.key_path, error))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&config.ca_path)
            .map_err(|error| tls_error(&config.ca_path, error))?
        {
            let ca = ca.map_err(|error| tls_error(&config.ca_path, error))?;
            roots.add(ca).map_err(|error| tls_error(&config.ca_path, error))?;
        }
        if roots.is_empty() {
            return Err(tls_error(&config.ca_path, "no CA certificate in the file"));
        }
        let roots = Arc::new(roots);

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|error| tls_error(&config.ca_path, error))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(&config.cert_path, error))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|error| tls_error(&config.key_path, error))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(&config.cert_path, error))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|error| tls_error(&config.key_path, error))?;
        Ok(TlsContext {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            require_node_names: config.require_node_names,
        })
    }
}
