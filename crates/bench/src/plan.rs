//! What `twin bench` runs: the matrix of [`Spec`]s (mode x workload x peers x frame
//! size x offered rate), and where each process of a run is placed on the machine's
//! two cores.
//!
//! Placement ([`Spec::placement`]): the client owns CPU 0 and the NIC CPU 1; the
//! switch (and its driver domain, which inherits its affinity) shares the client's
//! core, so that the client's sending rate and the switch's forwarding share one
//! core's time: the client cannot outrun the switch and overflow the uplink's ring.
//! The built-in peers yield their core when idle, so with them everything busy-polls.
//! A testpmd client never yields: next to it the switch runs event-driven, woken by
//! the client's kicks (a busy poller would get one ring's worth of frames per
//! scheduler slice). Next to the NIC instead, a switch fed from another core pulls
//! frames faster than the NIC that shares its core can take them: 0.04-0.4 Mpps,
//! almost all dropped at the uplink, in the first version of this placement.
//! Fixed-rate runs are event-driven throughout (a busy poller burns its core at any
//! rate, so its CPU per packet would say nothing).
//!
//! Limits: the placement is for CPUs 0 and 1 only; on a larger machine the other
//! cores stay idle, and on a one-core machine the `--cpu` pins fail.

use serde::Serialize;

/// Who runs the uplink driver's fast path, or no switch at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The client straight into the NIC: no switch.
    Native,
    /// The switch runs the driver's fast path with direct access to the driver
    /// domain's memory.
    Inline,
    /// The driver domain runs the fast path; frames cross exchange rings.
    Domain,
    /// The switch runs the fast path as a twin, through the SVM.
    Twin,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 4] = [Mode::Native, Mode::Inline, Mode::Domain, Mode::Twin];

    /// The name used on the command line, in tables and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Inline => "inline",
            Mode::Domain => "domain",
            Mode::Twin => "twin",
        }
    }

    /// Parses a name of [`Mode::name`].
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Which way the frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Client to NIC; the NIC counts.
    Transmit,
    /// NIC to client; the client counts.
    Receive,
    /// Client to a reflecting NIC and back; the client counts what came back.
    Roundtrip,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 3] = [Workload::Transmit, Workload::Receive, Workload::Roundtrip];

    /// Parses a name of [`Workload::name`].
    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// The name used in tables and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Transmit => "transmit",
            Workload::Receive => "receive",
            Workload::Roundtrip => "roundtrip",
        }
    }
}

/// The program at one end of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// `twin gen` as the client, `twin nic` as the NIC.
    Builtin,
    /// DPDK `dpdk-testpmd`: virtio-user as the client, net_vhost as the NIC.
    Dpdk,
}

/// Busy polling or sleeping on eventfds, for the switch (and its driver domain)
/// and the built-in peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Poll {
    /// Poll without sleeping (yielding the core after a few empty rounds).
    Busy,
    /// Sleep in epoll until a kick or call arrives.
    Event,
}

impl Poll {
    /// The name on the command line of `twin switch --poll` and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Poll::Busy => "busy",
            Poll::Event => "event",
        }
    }
}

/// One benchmark configuration; every run of it starts fresh processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Spec {
    /// The data path.
    pub mode: Mode,
    /// The direction of the traffic.
    pub workload: Workload,
    /// The client program.
    pub client: Peer,
    /// The NIC program.
    pub nic: Peer,
    /// Ethernet frame length in bytes (no FCS, no virtio header).
    pub size: usize,
    /// Offered rate in packets per second; `None`: as fast as the path goes.
    pub rate_pps: Option<u64>,
}

/// The CPUs (and poll mode) of one run's processes; for testpmd, the core that
/// forwards (its main lcore, mostly idle, is the other one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The client's CPU.
    pub client: usize,
    /// The switch's CPU (its driver domain inherits it).
    pub switch: usize,
    /// The NIC's CPU.
    pub nic: usize,
    /// Poll mode of the switch, the driver domain and the built-in peers.
    pub poll: Poll,
}

/// Every peers label of [`Spec::peers`], in table order.
pub const PEER_SETS: [&str; 4] = ["builtin", "dpdk-client", "dpdk-nic", "dpdk-both"];

impl Spec {
    /// Where the processes of this spec run (see the module docs).
    pub fn placement(&self) -> Placement {
        let poll = match (self.rate_pps, self.client) {
            (Some(_), _) => Poll::Event,
            (None, Peer::Dpdk) if self.mode != Mode::Native => Poll::Event,
            _ => Poll::Busy,
        };
        Placement {
            client: 0,
            switch: 0,
            nic: 1,
            poll,
        }
    }

    /// The DPDK-only reference: testpmd virtio-user straight into testpmd net_vhost.
    pub fn is_dpdk_reference(&self) -> bool {
        self.mode == Mode::Native && self.client == Peer::Dpdk && self.nic == Peer::Dpdk
    }

    /// A short label of the peers: `builtin`, `dpdk-client`, `dpdk-nic`, `dpdk-both`.
    pub fn peers(&self) -> &'static str {
        match (self.client, self.nic) {
            (Peer::Builtin, Peer::Builtin) => "builtin",
            (Peer::Dpdk, Peer::Builtin) => "dpdk-client",
            (Peer::Builtin, Peer::Dpdk) => "dpdk-nic",
            (Peer::Dpdk, Peer::Dpdk) => "dpdk-both",
        }
    }

    /// One line for progress and error messages.
    pub fn label(&self) -> String {
        let rate = match self.rate_pps {
            Some(r) => format!(" at {} kpps", r / 1000),
            None => String::new(),
        };
        let peers = if self.is_dpdk_reference() {
            "dpdk-both, the DPDK-only reference"
        } else {
            self.peers()
        };
        format!(
            "{} {} {} B {}{} ({})",
            self.mode.name(),
            self.workload.name(),
            self.size,
            peers,
            rate,
            self.placement().poll.name()
        )
    }
}

/// Which cells with DPDK testpmd peers a plan has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdkCells {
    /// None.
    None,
    /// Two, for `--quick`: testpmd as the client (the built-in NIC counting) and
    /// as the NIC (the generator sending), transmit through the twin at the first
    /// size (or the nearest the options allow: see [`Plan::new`]).
    Quick,
    /// Every workload with testpmd as the client, as the NIC and as both.
    All,
}

/// What one invocation measures.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Maximum-rate and fixed-rate runs, in order.
    pub specs: Vec<Spec>,
    /// Modes whose round-trip time under light load is measured after them.
    pub rtt_modes: Vec<Mode>,
}

/// Offered rates of the fixed-rate runs (transmit, built-in peers, event-driven).
pub const FIXED_RATES_PPS: [u64; 3] = [100_000, 300_000, 1_000_000];
/// Offered rates of the fixed-rate runs with `--quick`.
pub const QUICK_FIXED_RATES_PPS: [u64; 2] = [100_000, 1_000_000];

impl Plan {
    /// The matrix for `modes` and `sizes`: every workload with the built-in peers
    /// at maximum rate; transmit at each of `rates` (event-driven); with
    /// [`DpdkCells::All`], every workload again with testpmd as the client, as the
    /// NIC and as both (the last in `native` mode is the DPDK-only reference); with
    /// [`DpdkCells::Quick`], one cell with testpmd as the client and one with it as
    /// the NIC: `twin` (else the last of `modes`), transmit (else the first of
    /// `workloads`), the first of `sizes`.
    pub fn new(
        modes: &[Mode],
        workloads: &[Workload],
        sizes: &[usize],
        rates: &[u64],
        dpdk: DpdkCells,
    ) -> Plan {
        let mut specs = Vec::new();
        let mut peer_sets = vec![(Peer::Builtin, Peer::Builtin)];
        if dpdk == DpdkCells::All {
            peer_sets.extend([
                (Peer::Dpdk, Peer::Builtin),
                (Peer::Builtin, Peer::Dpdk),
                (Peer::Dpdk, Peer::Dpdk),
            ]);
        }
        for (client, nic) in peer_sets {
            for &mode in modes {
                for &workload in workloads {
                    for &size in sizes {
                        specs.push(Spec {
                            mode,
                            workload,
                            client,
                            nic,
                            size,
                            rate_pps: None,
                        });
                    }
                }
            }
        }
        let quick_mode = modes
            .iter()
            .copied()
            .find(|&m| m == Mode::Twin)
            .or(modes.last().copied());
        let quick_workload = workloads
            .iter()
            .copied()
            .find(|&w| w == Workload::Transmit)
            .or(workloads.first().copied());
        if let (DpdkCells::Quick, Some(mode), Some(workload), Some(&size)) =
            (dpdk, quick_mode, quick_workload, sizes.first())
        {
            for (client, nic) in [(Peer::Dpdk, Peer::Builtin), (Peer::Builtin, Peer::Dpdk)] {
                specs.push(Spec {
                    mode,
                    workload,
                    client,
                    nic,
                    size,
                    rate_pps: None,
                });
            }
        }
        let rates = if workloads.contains(&Workload::Transmit) {
            rates
        } else {
            &[]
        };
        for &rate in rates {
            for &mode in modes {
                for &size in sizes {
                    specs.push(Spec {
                        mode,
                        workload: Workload::Transmit,
                        client: Peer::Builtin,
                        nic: Peer::Builtin,
                        size,
                        rate_pps: Some(rate),
                    });
                }
            }
        }
        Plan {
            specs,
            rtt_modes: modes.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_has_every_combination_once() {
        let p = Plan::new(
            &Mode::ALL,
            &Workload::ALL,
            &[64, 1500],
            &FIXED_RATES_PPS,
            DpdkCells::All,
        );
        // 4 peer sets x 4 modes x 3 workloads x 2 sizes, then 3 rates x 4 modes x 2 sizes.
        assert_eq!(p.specs.len(), 4 * 4 * 3 * 2 + 3 * 4 * 2);
        let mut sorted = p.specs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), p.specs.len());
        assert_eq!(p.specs.iter().filter(|s| s.is_dpdk_reference()).count(), 6);
    }

    #[test]
    fn busy_pollers_never_share_a_core_with_testpmd() {
        let p = Plan::new(&Mode::ALL, &Workload::ALL, &[64], &[], DpdkCells::All);
        for s in p.specs {
            let pl = s.placement();
            if s.mode == Mode::Native {
                assert_ne!(pl.client, pl.nic);
                continue;
            }
            let neighbour = if pl.switch == pl.client {
                s.client
            } else {
                s.nic
            };
            if neighbour == Peer::Dpdk {
                assert_eq!(pl.poll, Poll::Event, "{}", s.label());
            }
        }
    }

    #[test]
    fn quick_has_testpmd_as_client_and_as_nic_once() {
        let p = Plan::new(
            &Mode::ALL,
            &Workload::ALL,
            &[64, 1500],
            &QUICK_FIXED_RATES_PPS,
            DpdkCells::Quick,
        );
        let dpdk: Vec<_> = p
            .specs
            .iter()
            .filter(|s| s.client == Peer::Dpdk || s.nic == Peer::Dpdk)
            .map(|s| (s.mode, s.workload, s.size, s.peers()))
            .collect();
        assert_eq!(
            dpdk,
            [
                (Mode::Twin, Workload::Transmit, 64, "dpdk-client"),
                (Mode::Twin, Workload::Transmit, 64, "dpdk-nic"),
            ]
        );
    }

    #[test]
    fn fixed_rates_are_event_driven() {
        let p = Plan::new(
            &[Mode::Twin],
            &[Workload::Transmit],
            &[64],
            &[1000],
            DpdkCells::None,
        );
        let fixed: Vec<_> = p.specs.iter().filter(|s| s.rate_pps.is_some()).collect();
        assert_eq!(fixed.len(), 1);
        assert_eq!(fixed[0].placement().poll, Poll::Event);
    }
}
