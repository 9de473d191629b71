//! TLS termination on HTTP frontends, black-box: the real binary with certificates made by the
//! `openssl` CLI, talked to by an in-process rustls client, `openssl s_client`, curl and raw
//! sockets. Modules: `handshake` (SNI, ECDSA/RSA choice, versions, ALPN, resumption, OCSP),
//! `failures` (failed and hostile handshakes and their counters), `http` (HTTP features over
//! TLS), `config` (config errors, reloads, redirect_https, graceful stop).

mod common;
#[path = "tls/support.rs"]
mod support;

#[path = "tls/config.rs"]
mod config;
#[path = "tls/edge.rs"]
mod edge;
#[path = "tls/failures.rs"]
mod failures;
#[path = "tls/handshake.rs"]
mod handshake;
#[path = "tls/http.rs"]
mod http;
