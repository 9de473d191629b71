//! Certificates for the TLS frontends: PEM chains and keys read from files (a problem names the
//! file), the host names each certificate covers read from the certificate itself
//! (subjectAltName DNS names, exact and `*.` wildcards), and the resolver that picks one per
//! handshake by SNI, then by the signature schemes the client offers (an ECDSA and an RSA
//! certificate for the same names: ECDSA for clients that can verify it, RSA for the others).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One `{ cert, key, ocsp }` of a `tls.certs` list, loaded.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the end-entity certificate, lowercase (`*.example.com` kept as is).
    pub names: Vec<String>,
}

/// Read a PEM chain (end entity first), its private key and, if given, a DER OCSP response to
/// staple. The key must match the certificate.
pub fn load(cert: &Path, key: &Path, ocsp: Option<&Path>) -> Result<Loaded, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {}", cert.display(), pem_problem(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {}", cert.display(), pem_problem(&e)))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "{}: no CERTIFICATE block in the file",
            cert.display()
        ));
    };
    let names = names_of(leaf).map_err(|m| format!("{}: {m}", cert.display()))?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: {}", key.display(), pem_problem(&e)))?;
    let provider = super::provider();
    let mut certified = CertifiedKey::from_der(chain, der, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{}: this key does not belong to the certificate in {}",
            key.display(),
            cert.display()
        ),
        other => format!("{}: unusable private key: {other}", key.display()),
    })?;
    if let Some(ocsp) = ocsp {
        let resp = std::fs::read(ocsp).map_err(|e| format!("{}: {e}", ocsp.display()))?;
        // A DER OCSPResponse is a SEQUENCE; a PEM or text file here is a mistake worth naming.
        if resp.first() != Some(&0x30) {
            return Err(format!(
                "{}: not a DER OCSP response (make one with `openssl ocsp ... -respout FILE`)",
                ocsp.display()
            ));
        }
        certified.ocsp = Some(resp);
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
    })
}

fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        E::NoItemsFound => "no PEM block of the expected kind in the file".into(),
        other => format!("not a usable PEM file ({other:?})"),
    }
}

/// The subjectAltName DNS names of a certificate, lowercase. A certificate without any cannot
/// be chosen by SNI (browsers ignore the subject CN), which is refused rather than guessed at.
pub fn names_of(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let names: Vec<String> = ee
        .valid_dns_names()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if names.is_empty() {
        return Err("the certificate has no DNS name in subjectAltName".into());
    }
    Ok(names)
}

/// Certificates by the names they cover; the first certificate of the list is the default (for
/// clients without SNI, or naming a host no certificate covers, as nginx and HAProxy do).
pub struct Resolver {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*.example.com` stored as `example.com`: covers exactly one more label.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    default: Vec<Arc<CertifiedKey>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Resolver {
    pub fn new(certs: &[Loaded]) -> Resolver {
        let mut exact: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        for c in certs {
            for n in &c.names {
                let (map, name) = match n.strip_prefix("*.") {
                    Some(rest) => (&mut wildcard, rest),
                    None => (&mut exact, n.as_str()),
                };
                let list = map.entry(name.to_string()).or_default();
                if !list.iter().any(|k| Arc::ptr_eq(k, &c.key)) {
                    list.push(c.key.clone());
                }
            }
        }
        // The default names: every certificate that covers the first one's first name (its
        // ECDSA and RSA twins), the first certificate first.
        let default = match certs.first() {
            Some(first) => {
                let mut d = vec![first.key.clone()];
                for c in &certs[1..] {
                    if c.names == first.names {
                        d.push(c.key.clone());
                    }
                }
                d
            }
            None => Vec::new(),
        };
        Resolver {
            exact,
            wildcard,
            default,
        }
    }

    /// The candidates for a server name: exact match first, then a wildcard one label up.
    fn candidates(&self, sni: Option<&str>) -> &[Arc<CertifiedKey>] {
        if let Some(name) = sni {
            // rustls hands SNI over already validated as a DNS name; names compare caselessly.
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            if let Some(list) = self.exact.get(name) {
                return list;
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(list) = self.wildcard.get(parent) {
                    return list;
                }
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let list = self.candidates(hello.server_name());
        let offered = hello.signature_schemes();
        // ECDSA keys sign faster and their handshakes are smaller: prefer them when the client
        // can verify them, then anything it can verify.
        let ecdsa =
            |k: &&Arc<CertifiedKey>| matches!(k.key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
        list.iter()
            .filter(ecdsa)
            .chain(list.iter().filter(|k| !ecdsa(k)))
            .find(|k| k.key.choose_scheme(offered).is_some())
            // None fits what the client can verify (or it offered nothing usable, e.g. no
            // cipher suite in common): the first, and rustls says what is incompatible.
            .or_else(|| list.first())
            .cloned()
    }
}
