//! Policies: one small module each, plugged into a step of the request path. Admission
//! policies (who may reach a route, and how) run in [`crate::request`]'s admit step in a
//! fixed order; response policies run in its respond step.

pub(crate) mod affinity;
pub(crate) mod allow_list;
pub(crate) mod auth_cache;
pub(crate) mod basic_auth;
pub(crate) mod body_size;
pub(crate) mod canary;
pub(crate) mod client_cert;
pub(crate) mod client_limits;
pub(crate) mod cors;
pub(crate) mod error_pages;
pub(crate) mod external_auth;
pub(crate) mod https_redirect;
pub(crate) mod redirect;
pub(crate) mod response_headers;
pub(crate) mod unavailable;
