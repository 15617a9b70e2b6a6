//! HTTPS for the API server. kubectl (client-go) never sends bearer tokens over plain HTTP, so the
//! devcluster serves TLS with a certificate from its own CA. The CA key and certificate live in
//! the state directory (`ca.key`, `ca.crt`) so a restarted devcluster keeps its identity; the
//! serving certificate (for `localhost` and the listen address) is made at each start.

use crate::error::{Error, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Connections whose TLS handshake finished but that the server has not picked up yet.
const ACCEPT_QUEUE: usize = 128;
/// A client that does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("tls: {e}"))
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "capsule-devcluster-ca");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

pub struct ServingIdentity {
    /// PEM of the CA, for kubeconfigs.
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// Loads (or creates) the CA in `state_dir` and issues a serving certificate for `address`.
pub fn serving_identity(state_dir: &Path, address: SocketAddr) -> Result<ServingIdentity> {
    let key_path = state_dir.join("ca.key");
    let cert_path = state_dir.join("ca.crt");
    let (ca_key, ca_pem) = match (
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&cert_path),
    ) {
        (Ok(key), Ok(cert)) => (KeyPair::from_pem(&key).map_err(tls_error)?, cert),
        _ => {
            let key = KeyPair::generate().map_err(tls_error)?;
            let cert = ca_params()?.self_signed(&key).map_err(tls_error)?;
            std::fs::write(&key_path, key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem())?;
            (key, cert.pem())
        }
    };
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ip = address.ip().to_string();
    if !names.contains(&ip) {
        names.push(ip);
    }
    let mut params = CertificateParams::new(names).map_err(tls_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "capsule-devcluster");
    let key = KeyPair::generate().map_err(tls_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                cert.der().clone(),
                CertificateDer::from_pem_slice_compat(&ca_pem)?,
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(tls_error)?;
    let mut config = config;
    // axum serves HTTP/1.1 here; clients fall back to it through ALPN.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServingIdentity {
        ca_pem,
        config: Arc::new(config),
    })
}

trait FromPemCompat: Sized {
    fn from_pem_slice_compat(pem: &str) -> Result<Self>;
}

impl FromPemCompat for CertificateDer<'static> {
    fn from_pem_slice_compat(pem: &str) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(tls_error)
    }
}

/// A TLS listener for `axum::serve`: handshakes run in their own tasks so a slow client does not
/// hold up others.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (sender, accepted) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::debug!(%error, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(pair) => pair,
            // Shut down: graceful shutdown of the server ends the wait.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
