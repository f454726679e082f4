//! The forwarding loop ([`DataPath`]) over fake ports behind the [`Port`] interface:
//! batches from every port, delivery outcomes counted where they happen, ordering
//! across batches, a peer going away, draining before news, the report and
//! operators' commands routed by port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::counters::PortReport;
use crate::port::{CommandDone, PortCommand, PortCommandError, PortNews};

use super::*;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
const N: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

/// A frame from `src` to `dst` whose payload carries `seq`.
fn frame(dst: MacAddr, src: MacAddr, seq: u32) -> Vec<u8> {
    let mut f = [&dst.0[..], &src.0[..], &[0x88, 0xb5]].concat();
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0);
    f
}

/// The sequence number in a frame made by [`frame`].
fn seq_of(f: &[u8]) -> u32 {
    u32::from_be_bytes([f[14], f[15], f[16], f[17]])
}

/// What a test sees of a fake port (shared with the port, which the data path owns).
#[derive(Debug, Default)]
struct FakeState {
    /// Frames its peer sent, not yet taken.
    inbox: VecDeque<Vec<u8>>,
    /// Frames delivered to it, published or not.
    delivered: Vec<Vec<u8>>,
    /// How many of `delivered` were published by a flush.
    published: usize,
    up: bool,
    /// Room for this many more frames (`None`: unlimited).
    room: Option<usize>,
    /// The next maintain reports the peer gone (and the port down).
    going_away: bool,
    /// The port has news that needs a drain first.
    pending_change: bool,
    /// Frames taken while a change was pending (drained before maintain).
    drained_before_news: usize,
    commands: Vec<PortCommand>,
    /// The fd it waits on (none when `None`).
    wake_fd: Option<RawFd>,
    /// What `set_notify` answers (work raced in).
    races: bool,
    /// The notification states it was asked for.
    notify_asked: Vec<bool>,
    /// The next maintain reports changed wait fds.
    fds_change: bool,
}

#[derive(Debug)]
struct FakePort {
    name: String,
    kind: PortKind,
    mac: Option<MacAddr>,
    state: Arc<Mutex<FakeState>>,
}

fn fake(name: &str, kind: PortKind) -> (Box<dyn Port>, Arc<Mutex<FakeState>>) {
    let state = Arc::new(Mutex::new(FakeState {
        up: true,
        ..Default::default()
    }));
    let port = FakePort {
        name: name.to_string(),
        kind,
        mac: None,
        state: state.clone(),
    };
    (Box::new(port), state)
}

impl Port for FakePort {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> PortKind {
        self.kind
    }

    fn pinned_mac(&self) -> Option<MacAddr> {
        self.mac
    }

    fn receive(&mut self, max: usize, sink: &mut dyn FnMut(&Segments<'_>)) -> usize {
        let mut st = self.state.lock().unwrap();
        let mut n = 0;
        while n < max {
            let Some(mut f) = st.inbox.pop_front() else {
                break;
            };
            if st.pending_change {
                st.drained_before_news += 1;
            }
            sink(&Segments::single(VolatileSlice::from(&mut f[..])));
            n += 1;
        }
        n
    }

    fn deliver(&mut self, frame: &Segments<'_>) -> Delivery {
        let mut st = self.state.lock().unwrap();
        if !st.up {
            return Delivery::Down;
        }
        match &mut st.room {
            Some(0) => {
                return match self.kind {
                    PortKind::Uplink => Delivery::Dropped(DropReason::UplinkRingFull),
                    PortKind::Client => Delivery::DroppedByPort,
                }
            }
            Some(r) => *r -= 1,
            None => {}
        }
        let mut v = vec![0; frame.len()];
        frame.read_prefix(&mut v);
        st.delivered.push(v);
        Delivery::Delivered
    }

    fn flush(&mut self) {
        let mut st = self.state.lock().unwrap();
        st.published = st.delivered.len();
    }

    fn set_notify(&mut self, on: bool) -> bool {
        let mut st = self.state.lock().unwrap();
        st.notify_asked.push(on);
        st.races
    }

    fn wake_fds(&self, add: &mut dyn FnMut(RawFd)) {
        if let Some(fd) = self.state.lock().unwrap().wake_fd {
            add(fd);
        }
    }

    fn wants_drain(&self) -> bool {
        self.state.lock().unwrap().pending_change
    }

    fn maintain(&mut self, _cx: &MaintainContext) -> Result<PortNews, PortError> {
        let mut st = self.state.lock().unwrap();
        st.pending_change = false;
        if std::mem::take(&mut st.going_away) {
            st.up = false;
            return Ok(PortNews {
                fds_changed: true,
                peer_gone: true,
            });
        }
        Ok(PortNews {
            fds_changed: std::mem::take(&mut st.fds_change),
            peer_gone: false,
        })
    }

    fn command(
        &mut self,
        cmd: PortCommand,
        _queue: Option<u32>,
        _now: Instant,
    ) -> Result<CommandDone, PortCommandError> {
        if self.kind == PortKind::Client {
            return Err(PortCommandError::Unsupported {
                port: self.name.clone(),
            });
        }
        self.state.lock().unwrap().commands.push(cmd);
        Ok(CommandDone { fds_changed: true })
    }

    fn report(&self, counters: &PortCounters) -> PortReport {
        PortReport::new(counters, [], 0, 0, serde_json::Value::Null)
    }
}

/// Two clients (a: 0, b: 1) and an uplink (u: 2).
fn three_ports() -> (DataPath, [Arc<Mutex<FakeState>>; 3]) {
    let (a, sa) = fake("a", PortKind::Client);
    let (b, sb) = fake("b", PortKind::Client);
    let (u, su) = fake("u", PortKind::Uplink);
    let dp = DataPath::new(vec![a, b, u], Fdb::new(64, 60_000, 64), PollMode::Busy);
    (dp, [sa, sb, su])
}

/// One loop round as `run` does it: forward from every port, flush, take news.
fn round(dp: &mut DataPath) -> Moved {
    let now = Instant::now();
    let moved = dp.forward_once(dp.now_ms(now));
    dp.flush();
    dp.control(now).unwrap();
    moved
}

fn counters(dp: &DataPath, p: usize) -> &PortCounters {
    &dp.ports.entries[p].counters
}

#[test]
fn an_unknown_destination_floods_then_the_learned_one_gets_unicast() {
    let (mut dp, [sa, sb, su]) = three_ports();
    sa.lock().unwrap().inbox.push_back(frame(N, A, 1));
    let m = round(&mut dp);
    assert_eq!((m.taken, m.delivered), (1, 2));
    assert_eq!(sb.lock().unwrap().published, 1);
    assert_eq!(su.lock().unwrap().published, 1);
    assert!(
        sa.lock().unwrap().delivered.is_empty(),
        "no copy back to the ingress port"
    );
    // The NIC answers: A was learned on port 0, so only a gets it.
    su.lock().unwrap().inbox.push_back(frame(A, N, 2));
    let m = round(&mut dp);
    assert_eq!((m.taken, m.delivered), (1, 1));
    assert_eq!(sa.lock().unwrap().delivered.len(), 1);
    assert_eq!(
        sb.lock().unwrap().delivered.len(),
        1,
        "b got the flood only"
    );
    // And N was learned on the uplink.
    sb.lock().unwrap().inbox.push_back(frame(N, B, 3));
    round(&mut dp);
    assert_eq!(su.lock().unwrap().delivered.len(), 2);
    assert_eq!(sa.lock().unwrap().delivered.len(), 1);
    assert_eq!(counters(&dp, 0).rx_packets, 1);
    assert_eq!(counters(&dp, 2).tx_packets, 2);
    assert_eq!(counters(&dp, 2).tx_bytes, 120);
    assert_eq!(dp.total_drops(), 0);
}

#[test]
fn frames_keep_their_order_across_batches() {
    let (mut dp, [sa, _sb, su]) = three_ports();
    // Teach the switch where N is.
    su.lock().unwrap().inbox.push_back(frame(B, N, 0));
    round(&mut dp);
    let n = 3 * BATCH as u32 + 5;
    sa.lock()
        .unwrap()
        .inbox
        .extend((1..=n).map(|i| frame(N, A, i)));
    let mut rounds = 0;
    while !sa.lock().unwrap().inbox.is_empty() {
        let m = round(&mut dp);
        assert!(m.taken <= BATCH, "a round takes at most one batch per port");
        rounds += 1;
    }
    assert_eq!(rounds, 4);
    let got: Vec<u32> = su
        .lock()
        .unwrap()
        .delivered
        .iter()
        .map(|f| seq_of(f))
        .collect();
    assert_eq!(got, (1..=n).collect::<Vec<_>>());
}

#[test]
fn each_outcome_is_counted_where_it_happens() {
    let (mut dp, [sa, sb, su]) = three_ports();
    su.lock().unwrap().inbox.push_back(frame(A, N, 0));
    sb.lock().unwrap().inbox.push_back(frame(A, B, 0));
    round(&mut dp);
    // The uplink's ring is full: counted on the uplink (egress), not on a.
    su.lock().unwrap().room = Some(0);
    sa.lock().unwrap().inbox.push_back(frame(N, A, 1));
    round(&mut dp);
    assert_eq!(counters(&dp, 2).dropped(DropReason::UplinkRingFull), 1);
    assert_eq!(counters(&dp, 0).rx_packets, 1);
    // The uplink is down: its one-destination frame counts on the ingress port.
    su.lock().unwrap().up = false;
    sa.lock().unwrap().inbox.push_back(frame(N, A, 2));
    round(&mut dp);
    assert_eq!(counters(&dp, 0).dropped(DropReason::UplinkDown), 1);
    // A client destination that is down is destination_down.
    sa.lock().unwrap().up = false;
    sb.lock().unwrap().inbox.push_back(frame(A, B, 3));
    round(&mut dp);
    assert_eq!(counters(&dp, 1).dropped(DropReason::DestinationDown), 1);
    // A client that had no room counted it itself: the switch counts nothing.
    sa.lock().unwrap().up = true;
    sa.lock().unwrap().room = Some(0);
    sb.lock().unwrap().inbox.push_back(frame(A, B, 4));
    round(&mut dp);
    assert_eq!(dp.total_drops(), 3);
    // a got the two floods of the first round, not the frame it had no room for.
    assert_eq!(counters(&dp, 0).tx_packets, 2);
}

#[test]
fn a_peer_that_goes_away_is_forgotten_and_its_frames_flood() {
    let (mut dp, [sa, sb, su]) = three_ports();
    sa.lock().unwrap().inbox.push_back(frame(B, A, 0));
    sb.lock().unwrap().inbox.push_back(frame(A, B, 0));
    round(&mut dp);
    assert_eq!(dp.fdb().len(), 2);
    sb.lock().unwrap().going_away = true;
    round(&mut dp);
    assert_eq!(dp.fdb().len(), 1, "b's address is forgotten");
    // A frame to B floods now: the uplink gets it, b (down) is skipped uncounted.
    sa.lock().unwrap().inbox.push_back(frame(B, A, 1));
    round(&mut dp);
    assert_eq!(su.lock().unwrap().delivered.len(), 2);
    assert_eq!(dp.total_drops(), 0);
}

#[test]
fn a_port_with_pending_news_is_drained_before_it_takes_them() {
    let (mut dp, [sa, _sb, su]) = three_ports();
    {
        let mut st = sa.lock().unwrap();
        st.inbox
            .extend((0..(2 * BATCH as u32 + 1)).map(|i| frame(N, A, i)));
        st.pending_change = true;
    }
    let now = Instant::now();
    dp.control(now).unwrap();
    let st = sa.lock().unwrap();
    assert!(st.inbox.is_empty());
    assert_eq!(st.drained_before_news, 2 * BATCH + 1);
    assert!(!st.pending_change);
    assert_eq!(
        su.lock().unwrap().published,
        2 * BATCH + 1,
        "drained frames are published"
    );
}

#[test]
fn the_report_groups_ports_by_kind_with_their_counters() {
    let (mut dp, [sa, _sb, _su]) = three_ports();
    sa.lock().unwrap().inbox.push_back(frame(N, A, 1));
    sa.lock().unwrap().inbox.push_back(vec![1, 2, 3]);
    round(&mut dp);
    let r = crate::report(&dp);
    assert_eq!(r.clients.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(r.uplinks.keys().collect::<Vec<_>>(), ["u"]);
    assert_eq!(r.clients["a"].rx_packets, 2);
    assert_eq!(r.clients["a"].drops["runt"], 1);
    assert_eq!(r.clients["b"].tx_packets, 1);
    assert_eq!(r.uplinks["u"].tx_packets, 1);
    assert_eq!(r.drops["runt"], 1);
}

#[test]
fn operators_commands_reach_the_named_uplink_only() {
    let (mut dp, [_sa, _sb, su]) = three_ports();
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    dp.set_control(rx);
    let ask = |cmd: crate::ctl::Command| {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        tx.send(crate::ctl::Request {
            command: cmd,
            reply,
            tap: None,
        })
        .unwrap();
        answer
    };
    let ok = ask(crate::ctl::Command::Mode {
        uplink: "u".into(),
        mode: crate::config::UplinkMode::Twin,
    });
    let missing = ask(crate::ctl::Command::Revive {
        uplink: "nope".into(),
    });
    let client = ask(crate::ctl::Command::Revive { uplink: "a".into() });
    assert!(
        dp.serve_control(Instant::now()),
        "the uplink said its fds changed"
    );
    assert!(ok.recv().unwrap().is_ok());
    for (answer, name) in [(missing, "nope"), (client, "a")] {
        match answer.recv().unwrap() {
            crate::ctl::Response::Err(f) => {
                assert_eq!(f.kind, crate::ctl::ErrorKind::NoSuchUplink);
                assert!(
                    f.message.contains(&format!("no uplink {name:?}")),
                    "{}",
                    f.message
                );
            }
            r => panic!("answered {r:?} for uplink {name}"),
        }
    }
    assert_eq!(
        su.lock().unwrap().commands,
        [PortCommand::Mode(crate::config::UplinkMode::Twin)]
    );
}

#[test]
fn the_table_knows_its_size() {
    assert!(PortTable::new(Vec::new()).is_empty());
    let (dp, _) = three_ports();
    assert!(!dp.ports.is_empty());
    assert_eq!(dp.ports.len(), 3);
}

/// The destination's kind decides the reason, also for a port numbered before
/// the ingress (the two halves of the table are looked up differently).
#[test]
fn a_frame_for_a_down_port_counts_by_that_ports_kind_on_either_side() {
    let (u, su) = fake("u", PortKind::Uplink);
    let (a, sa) = fake("a", PortKind::Client);
    let (b, sb) = fake("b", PortKind::Client);
    let mut dp = DataPath::new(vec![u, a, b], Fdb::new(64, 60_000, 64), PollMode::Busy);
    su.lock().unwrap().inbox.push_back(frame(A, N, 0));
    sb.lock().unwrap().inbox.push_back(frame(A, B, 0));
    round(&mut dp);
    su.lock().unwrap().up = false;
    sb.lock().unwrap().up = false;
    // From a (port 1): to N behind the uplink (port 0, before a), to B (port 2).
    sa.lock().unwrap().inbox.push_back(frame(N, A, 1));
    sa.lock().unwrap().inbox.push_back(frame(B, A, 2));
    round(&mut dp);
    let d = &counters(&dp, 1);
    assert_eq!(d.dropped(DropReason::UplinkDown), 1);
    assert_eq!(d.dropped(DropReason::DestinationDown), 1);
}

#[test]
fn the_flood_limit_set_on_the_data_path_applies() {
    let (mut dp, [sa, _sb, _su]) = three_ports();
    dp.set_flood_limit(5);
    sa.lock()
        .unwrap()
        .inbox
        .extend((0..20).map(|i| frame(N, A, i)));
    // A second into the run: five floods' worth of tokens.
    dp.forward_once(1000);
    dp.flush();
    assert_eq!(counters(&dp, 0).dropped(DropReason::FloodLimited), 15);
    assert_eq!(counters(&dp, 1).tx_packets, 5);
}

#[test]
fn sources_the_full_table_could_not_learn_are_counted() {
    let (a, sa) = fake("a", PortKind::Client);
    let (b, _sb) = fake("b", PortKind::Client);
    let mut dp = DataPath::new(vec![a, b], Fdb::new(2, 60_000, 64), PollMode::Busy);
    sa.lock()
        .unwrap()
        .inbox
        .extend((1..=5u8).map(|i| frame(N, MacAddr([2, 0, 0, 0, 1, i]), 0)));
    round(&mut dp);
    assert_eq!(dp.fdb().len(), 2);
    assert_eq!(dp.fdb_full(), 3);
}

#[test]
fn the_data_paths_clock_counts_from_its_start() {
    let (dp, _) = three_ports();
    let t = dp.core.start + Duration::from_millis(1500);
    assert_eq!(dp.now_ms(t), 1500);
}

#[test]
fn learned_addresses_expire_when_the_clock_passes_their_age() {
    let (mut dp, [sa, _sb, _su]) = three_ports();
    sa.lock().unwrap().inbox.push_back(frame(N, A, 0));
    let start = dp.core.start;
    dp.forward_once(0);
    dp.flush();
    assert_eq!(dp.fdb().len(), 1);
    // Not yet expired within its age; gone once the age and an interval passed.
    dp.control(start + Duration::from_millis(30_000)).unwrap();
    assert_eq!(dp.fdb().len(), 1);
    dp.control(start + Duration::from_millis(62_000)).unwrap();
    assert_eq!(dp.fdb().len(), 0);
}

#[test]
fn a_port_whose_wait_fds_changed_is_reported() {
    let (mut dp, [sa, _sb, _su]) = three_ports();
    assert!(!dp.control(Instant::now()).unwrap());
    sa.lock().unwrap().fds_change = true;
    assert!(dp.control(Instant::now()).unwrap());
}

#[test]
fn the_table_waits_on_every_ports_fds_and_asks_every_port_to_notify() {
    let (mut dp, states) = three_ports();
    for (i, st) in states.iter().enumerate() {
        st.lock().unwrap().wake_fd = Some(100 + i as RawFd);
    }
    let mut fds = Vec::new();
    dp.ports.wake_fds(&mut |fd| fds.push(fd));
    assert_eq!(fds, [100, 101, 102]);
    assert!(!dp.ports.set_notify(true), "no port raced");
    // One raced: every port is still asked, and the table says so.
    states[0].lock().unwrap().races = true;
    assert!(dp.ports.set_notify(false));
    for st in &states {
        assert_eq!(st.lock().unwrap().notify_asked, [true, false]);
    }
}
