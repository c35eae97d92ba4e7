//! How the network sinks (`loki`, `http`) reach their server: plain http or https (rustls with
//! the ring provider), trusting the system's roots or only the `caFile` bundle, with basic or
//! bearer auth from the config, a file or the environment.
//!
//! There is no switch to skip certificate verification: the sinks send credentials, and a
//! self-signed or private-CA server is trusted with `caFile` instead.
//! Must not know the push formats (see `loki`, `http`) or the retry rules (see `delivery`).

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::{Request, Response, Uri};
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::SinkError;
use crate::config::{Auth, Secret, TransportArgs};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client of one network sink.
pub struct Transport {
    client: HttpsClient,
    auth: Option<Auth>,
}

impl Transport {
    /// A client for `uri`: TLS is set up (and its roots loaded) only for `https://`; a secret
    /// is resolved once here so a missing file or variable stops the sink at start.
    pub fn new(sink: &'static str, uri: &Uri, args: &TransportArgs) -> Result<Self, SinkError> {
        let setup = |message: String| SinkError::Setup { sink, message };
        let https = uri.scheme_str() == Some("https");
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(format!("TLS: {e}")))?;
        let tls = match (&args.ca_file, https) {
            (Some(path), true) => builder.with_root_certificates(
                ca_file_roots(path)
                    .map_err(|e| setup(format!("caFile {}: {e}", path.display())))?,
            ),
            (Some(_), false) => {
                return Err(setup(format!(
                    "`caFile` is for https, but the address is `{uri}`"
                )))
            }
            (None, true) => builder.with_native_roots().map_err(|e| {
                setup(format!(
                    "system CA certificates: {e}; install ca-certificates or set `caFile`"
                ))
            })?,
            // Plain http: the TLS config is never used.
            (None, false) => builder.with_root_certificates(RootCertStore::empty()),
        }
        .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let transport = Transport {
            client: Client::builder(TokioExecutor::new()).build(connector),
            auth: args.auth.clone(),
        };
        transport.authorization().map_err(setup)?;
        if transport.auth.is_some() && !https {
            tracing::warn!("{sink} sink: credentials go to `{uri}` unencrypted (not https)");
        }
        Ok(transport)
    }

    /// The `Authorization` header value, secrets read now.
    fn authorization(&self) -> Result<Option<HeaderValue>, String> {
        let text = match &self.auth {
            None => return Ok(None),
            Some(Auth::Basic { username, password }) => {
                let pair = format!("{username}:{}", resolve(password)?);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Some(Auth::Bearer(token)) => format!("Bearer {}", resolve(token)?),
        };
        let mut value = HeaderValue::try_from(text)
            .map_err(|_| "a credential holds characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Send `request` with the credentials. The error names every cause (`client error
    /// (Connect): invalid peer certificate: UnknownIssuer`), not only hyper's outer one.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        if let Some(value) = self.authorization()? {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        self.client.request(request).await.map_err(|e| {
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(inner) = cause {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                cause = inner.source();
            }
            text
        })
    }
}

/// The TLS primitives: ring's. rustls 0.23.48 deprecates its ring provider for lacking
/// post-quantum key exchange; aws-lc-rs would need cmake and a C toolchain on every build
/// machine, and the sinks' pushes (log lines, no long-lived secrets beyond the credential)
/// do not warrant that. Public so tests serve TLS with the same primitives.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM bundle, the only roots trusted when `caFile` is given.
fn ca_file_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(roots)
}

fn resolve(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Inline(value) => Ok(value.clone()),
        Secret::File(path) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("{}: {e}", path.display())),
        Secret::Env(var) => {
            std::env::var(var).map_err(|e| format!("environment variable `{var}`: {e}"))
        }
    }
}
