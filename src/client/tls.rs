//! `wss://` for the client (feature `rustls`): the TLS configuration a dial uses.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};

use crate::client::ConnectError;

/// The TLS configuration of a client that was given none: the webpki roots (Mozilla's
/// root certificates, compiled in, so the same on every system), the process's default
/// crypto provider if the application installed one, else ring. Made once per process.
pub(crate) fn default_config() -> Result<Arc<ClientConfig>, ConnectError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(Arc::clone(config));
    }
    // Chosen here rather than by `ClientConfig::builder()`, which panics in a program
    // whose dependencies enable two providers and install none.
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConnectError::Tls {
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::clone(CONFIG.get_or_init(|| Arc::new(config))))
}
