//! Pure protocol code: incremental parsers and writers that never touch a socket.
pub mod http;
pub mod mysql;
pub mod proxy_protocol;
