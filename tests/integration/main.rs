//! Gatehouse end to end: real sockets on loopback, real upstreams and clients, the real
//! binary, and a Kubernetes API test server that the real kube-rs client talks to.
//!
//! One crate with a module per area, so the harness in `support` is built once.

mod support;

mod admin;
mod audit;
mod auth;
mod balancing;
mod canary;
mod cli;
mod deploy;
mod endpoints;
mod failures;
mod grpc;
mod h2;
mod health;
mod ingress;
mod kubernetes;
mod l4;
mod limits;
mod mtls;
mod names;
mod policy;
mod proxy;
mod reload;
mod retries;
mod status;
mod streaming;
mod timeouts;
mod tls;
mod upstream_h2;
mod upstream_tls;
