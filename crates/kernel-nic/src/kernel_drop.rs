//! Why a domain over a kernel interface did not pass a frame on: one set of
//! reasons for every kind (TAP, AF_PACKET), so an uplink's report has the same
//! counters whatever its kind.

/// A frame not passed on between the kernel and the switch, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelDrop {
    /// Shorter than an Ethernet header (and, for a TAP, its vnet header).
    TooShort,
    /// Longer than the other side's largest frame, or cut short by the kernel.
    TooLong,
    /// What the kernel side wrote around the frame failed its checks: a TAP's
    /// vnet header asking for an offload that is off, an AF_PACKET ring block
    /// whose header points outside it (the rest of the block is dropped with it).
    BadHeader,
    /// The interface is down (the kernel refuses frames sent to it).
    LinkDown,
    /// The kernel refused a frame it was handed (AF_PACKET's
    /// `TP_STATUS_WRONG_FORMAT`).
    Refused,
}

impl KernelDrop {
    /// Every reason, in counter order.
    pub const ALL: [KernelDrop; 5] = [
        KernelDrop::TooShort,
        KernelDrop::TooLong,
        KernelDrop::BadHeader,
        KernelDrop::LinkDown,
        KernelDrop::Refused,
    ];

    /// The counter's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KernelDrop::TooShort => "kernel_too_short",
            KernelDrop::TooLong => "kernel_too_long",
            KernelDrop::BadHeader => "kernel_bad_header",
            KernelDrop::LinkDown => "kernel_link_down",
            KernelDrop::Refused => "kernel_refused",
        }
    }
}
