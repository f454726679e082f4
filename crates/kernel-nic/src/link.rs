//! An interface's state, by name, in the caller's network namespace: whether it
//! exists, is administratively up, and has a carrier (`IFF_RUNNING`).
//!
//! Polled, not subscribed: the switch's supervision reads it now and then (a
//! netlink subscription would report changes sooner; not written yet).

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::ifname::IfName;
use crate::sys;

/// What [`link_state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Up with a carrier (`IFF_RUNNING`): frames can pass.
    pub running: bool,
}

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket the query goes through could not be created.
    #[error("cannot create a socket to query interfaces")]
    Socket(#[source] std::io::Error),
    /// The query failed for another reason than a missing interface.
    #[error("cannot read the flags of interface {name}")]
    Flags {
        /// The interface.
        name: IfName,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The state of interface `name`; `None` when there is no such interface.
pub fn link_state(name: &IfName) -> Result<Option<LinkState>, LinkError> {
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| LinkError::Socket(e.into()))?;
    match sys::if_flags(std::os::fd::AsFd::as_fd(&sock), name.as_bytes()) {
        Ok(flags) => {
            let flags = libc::c_int::from(flags);
            Ok(Some(LinkState {
                up: flags & libc::IFF_UP != 0,
                running: flags & libc::IFF_RUNNING != 0,
            }))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(LinkError::Flags {
            name: name.clone(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_and_a_missing_interface_is_none() {
        let lo: IfName = "lo".parse().unwrap();
        let s = link_state(&lo).unwrap().expect("lo exists");
        assert!(s.up && s.running, "{s:?}");
        let none: IfName = "twk-nosuch0".parse().unwrap();
        assert_eq!(link_state(&none).unwrap(), None);
    }
}
