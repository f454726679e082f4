//! virtio feature bits used by this project (virtio 1.2, sections 5.1.3 and 6).

use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

/// The device has a MAC address in its config space.
pub const NET_F_MAC: u64 = 1 << VIRTIO_NET_F_MAC;
/// The device reports link status in its config space.
pub const NET_F_STATUS: u64 = 1 << VIRTIO_NET_F_STATUS;
/// The driver can merge receive buffers (`num_buffers` in the header).
pub const NET_F_MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
/// Indirect descriptor tables.
pub const RING_F_INDIRECT_DESC: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC;
/// `used_event` / `avail_event` notification suppression.
pub const RING_F_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
/// Modern (virtio 1.x) device: little-endian, 12-byte net header.
pub const F_VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
/// vhost-user: the backend speaks `VHOST_USER_GET_PROTOCOL_FEATURES`.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Features a virtio-net device of this project offers: the switch's client ports and
/// the software NIC. A peer may accept any subset; DPDK virtio-user takes only
/// VERSION_1 (and PROTOCOL_FEATURES).
pub const DEVICE_OFFER: u64 =
    F_VERSION_1 | NET_F_MAC | NET_F_STATUS | NET_F_MRG_RXBUF | RING_F_EVENT_IDX;

/// Features the project's virtio-net driver asks of a NIC. It needs VERSION_1 and
/// takes EVENT_IDX when offered; it posts one buffer per frame, so it does not need
/// MRG_RXBUF, but accepts it (the header is 12 bytes either way under VERSION_1).
pub const DRIVER_WANT: u64 = F_VERSION_1 | RING_F_EVENT_IDX | NET_F_MRG_RXBUF;

/// Whether `features` contains every bit of `bits`.
pub const fn has(features: u64, bits: u64) -> bool {
    features & bits == bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit numbers virtio 1.2 (6, 5.1.3) and vhost-user give.
    #[test]
    fn feature_bits_are_the_specified_ones() {
        assert_eq!(NET_F_MAC, 1 << 5);
        assert_eq!(NET_F_MRG_RXBUF, 1 << 15);
        assert_eq!(NET_F_STATUS, 1 << 16);
        assert_eq!(RING_F_INDIRECT_DESC, 1 << 28);
        assert_eq!(RING_F_EVENT_IDX, 1 << 29);
        assert_eq!(VHOST_USER_F_PROTOCOL_FEATURES, 1 << 30);
        assert_eq!(F_VERSION_1, 1 << 32);
    }

    #[test]
    fn offered_and_wanted_sets() {
        assert_eq!(
            DEVICE_OFFER,
            (1 << 32) | (1 << 5) | (1 << 16) | (1 << 15) | (1 << 29)
        );
        assert_eq!(DRIVER_WANT, (1 << 32) | (1 << 29) | (1 << 15));
        // Indirect descriptors are neither offered nor wanted.
        assert!(!has(DEVICE_OFFER, RING_F_INDIRECT_DESC));
    }

    #[test]
    fn has_needs_every_bit() {
        assert!(has(DEVICE_OFFER, F_VERSION_1 | RING_F_EVENT_IDX));
        assert!(has(F_VERSION_1, F_VERSION_1));
        assert!(has(0, 0));
        assert!(!has(F_VERSION_1, F_VERSION_1 | NET_F_MAC));
        assert!(!has(NET_F_MAC, F_VERSION_1));
        assert!(!has(0, NET_F_MAC));
    }
}
