//! Which L4 listener is which, across reloads.

use std::net::SocketAddr;

use gatehouse_config::{L4Listener, L4Protocol};

/// Identifies a running L4 listener across snapshots: its protocol, its address as
/// configured, and which entry of that address it is (only port-0 test listeners share one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct L4Key {
    pub(crate) protocol: L4Protocol,
    pub(crate) listen: SocketAddr,
    pub(crate) nth: usize,
}

impl L4Key {
    /// The key of every `l4` entry of a configuration, in order.
    pub(crate) fn all(entries: &[L4Listener]) -> Vec<L4Key> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| L4Key {
                protocol: e.protocol,
                listen: e.listen,
                nth: entries[..i]
                    .iter()
                    .filter(|o| o.protocol == e.protocol && o.listen == e.listen)
                    .count(),
            })
            .collect()
    }
}
