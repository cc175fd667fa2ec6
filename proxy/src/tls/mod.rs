//! TLS termination: the certificates ([`certs`]) and the server that picks one per
//! handshake ([`acceptor`]).

pub(crate) mod acceptor;
pub mod certs;
pub(crate) mod client_auth;
pub(crate) mod passthrough;

pub use certs::{provider, self_signed_localhost, CertStore, LoadedCert, TlsError};
