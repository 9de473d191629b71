//! The pieces of `tests/http_differential.rs`: the PRNG, the request generator, the recording
//! backend, the client connection driver and the model that judges a connection.

pub mod backend;
pub mod check;
pub mod driver;
pub mod plan;
pub mod rng;
