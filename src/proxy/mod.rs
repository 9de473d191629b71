//! The data paths: [`http`] proxies HTTP/1.1 exchanges, [`mysql`] relays MySQL sessions, both
//! through the shard's [`upstream`] connection pools.
pub mod http;
pub mod mysql;
pub mod upstream;
