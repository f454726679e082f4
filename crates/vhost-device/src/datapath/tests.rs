//! Hostile-chain tests: an in-process fake client lays out split rings in a
//! `GuestMemoryMmap` and the data path must drop and count every bad chain.

use super::*;
use crate::shared::QueueConf;
use twin_wire::features::{F_VERSION_1, NET_F_MRG_RXBUF};
use vm_memory::Bytes;

const QSZ: u16 = 32;
const RX_DESC: u64 = 0x0;
const RX_AVAIL: u64 = 0x1000;
const RX_USED: u64 = 0x2000;
const TX_DESC: u64 = 0x3000;
const TX_AVAIL: u64 = 0x4000;
const TX_USED: u64 = 0x5000;
const BUF: u64 = 0x10000;
const MEM: usize = 0x100000;

struct Fake {
    mem: Arc<ClientMemory>,
    shared: Arc<Shared>,
    h: DeviceHandle,
    tx_idx: u16,
    rx_idx: u16,
    call_rx: std::io::PipeReader,
}

fn conf(desc: u64, avail: u64, used: u64, call: Option<Arc<File>>) -> QueueConf {
    QueueConf {
        size: QSZ,
        desc,
        avail,
        used,
        base: 0,
        base_seq: 1,
        kick: None,
        call,
        started: true,
        enabled: true,
    }
}

fn fake(features: u64) -> Fake {
    let mem = Arc::new(ClientMemory::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
    let shared = Arc::new(Shared::new().unwrap());
    let mut h = DeviceHandle::new(shared.clone(), Arc::from("test"));
    let (r, w) = std::io::pipe().unwrap();
    let call = Arc::new(File::from(std::os::fd::OwnedFd::from(w)));
    shared.publish(Published {
        connection: 1,
        connected: true,
        features,
        mem: Some(mem.clone()),
        fault: Default::default(),
        queues: [
            conf(RX_DESC, RX_AVAIL, RX_USED, Some(call.clone())),
            conf(TX_DESC, TX_AVAIL, TX_USED, Some(call)),
        ],
    });
    assert!(matches!(h.refresh(), Some(PortEvent::Connected { .. })));
    assert!(h.is_ready());
    Fake {
        mem,
        shared,
        h,
        tx_idx: 0,
        rx_idx: 0,
        call_rx: r,
    }
}

impl Fake {
    fn desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = table + 16 * u64::from(i);
        self.mem.write_obj(addr, GuestAddress(a)).unwrap();
        self.mem.write_obj(len, GuestAddress(a + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(a + 14)).unwrap();
    }
    fn post(&mut self, tx: bool, head: u16) {
        let (avail, idx) = if tx {
            (TX_AVAIL, &mut self.tx_idx)
        } else {
            (RX_AVAIL, &mut self.rx_idx)
        };
        let slot = u64::from(*idx % QSZ);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        *idx = idx.wrapping_add(1);
        self.mem.write_obj(*idx, GuestAddress(avail + 2)).unwrap();
    }
    fn set_avail_idx(&mut self, tx: bool, v: u16) {
        self.mem
            .write_obj(v, GuestAddress(if tx { TX_AVAIL } else { RX_AVAIL } + 2))
            .unwrap();
    }
    fn used_idx(&self, used: u64) -> u16 {
        self.mem.read_obj(GuestAddress(used + 2)).unwrap()
    }
    fn used_elem(&self, used: u64, i: u16) -> (u32, u32) {
        let a = used + 4 + 8 * u64::from(i % QSZ);
        (
            self.mem.read_obj(GuestAddress(a)).unwrap(),
            self.mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }
    /// Pops one TX chain; returns the frame bytes if delivered.
    fn pop(&mut self) -> Option<Vec<u8>> {
        let mut got = None;
        let n = self.h.pop_tx(8, |s| {
            let mut v = vec![0u8; s.len()];
            s.read_prefix(&mut v);
            got = Some(v);
        });
        assert_eq!(n, 1);
        got
    }
    fn tx_drops(&self, r: DropReason) -> u64 {
        self.h.stats().from_client_drops.get(r)
    }
}

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

#[test]
fn good_tx_frame_is_delivered_without_header() {
    let mut f = fake(F_VERSION_1);
    let data = frame(12 + 60);
    f.mem.write_slice(&data, GuestAddress(BUF)).unwrap();
    // header in one descriptor, frame split over two more
    f.desc(TX_DESC, 0, BUF, 12, DESC_F_NEXT, 1);
    f.desc(TX_DESC, 1, BUF + 12, 20, DESC_F_NEXT, 2);
    f.desc(TX_DESC, 2, BUF + 32, 40, 0, 0);
    f.post(true, 0);
    assert_eq!(f.pop().unwrap(), data[12..].to_vec());
    assert_eq!(f.used_idx(TX_USED), 1);
    assert_eq!(f.used_elem(TX_USED, 0), (0, 0));
    assert_eq!(f.h.stats().from_client_packets, 1);
    assert_eq!(f.h.stats().from_client_bytes, 60);
    // no NO_INTERRUPT flag -> one call for the batch
    assert_eq!(f.h.stats().calls, 1);
    let mut b = [0u8; 8];
    f.call_rx.read_exact(&mut b).unwrap();
}

#[test]
fn hostile_tx_chains_are_dropped_and_counted() {
    let mut f = fake(F_VERSION_1);
    let ok = (BUF, 12 + 60);
    // bad head index
    f.post(true, QSZ + 5);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::BadIndex), 1);
    // next out of range
    f.desc(TX_DESC, 0, ok.0, 12, DESC_F_NEXT, 999);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::BadIndex), 2);
    // loop of zero-length descriptors: 1 -> 2 -> 1
    f.desc(TX_DESC, 1, ok.0, 0, DESC_F_NEXT, 2);
    f.desc(TX_DESC, 2, ok.0, 0, DESC_F_NEXT, 1);
    f.post(true, 1);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::ChainLoop), 1);
    // self loop with data: hits the segment limit or the loop limit, never hangs
    f.desc(TX_DESC, 3, ok.0, 8, DESC_F_NEXT, 3);
    f.post(true, 3);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::TooManySegments), 1);
    // buffer outside memory, and straddling its end
    f.desc(TX_DESC, 4, 0x10_0000_0000, 100, 0, 0);
    f.post(true, 4);
    assert!(f.pop().is_none());
    f.desc(TX_DESC, 4, MEM as u64 - 10, 100, 0, 0);
    f.post(true, 4);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::OutOfMemory), 2);
    // 17 segments
    for i in 0..17u16 {
        let last = i == 16;
        f.desc(
            TX_DESC,
            5 + i,
            BUF + 8 * u64::from(i),
            8,
            if last { 0 } else { DESC_F_NEXT },
            6 + i,
        );
    }
    f.post(true, 5);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::TooManySegments), 2);
    // shorter than header + Ethernet header
    f.desc(TX_DESC, 0, BUF, 12 + 13, 0, 0);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::TooShort), 1);
    // longer than header + MAX_FRAME
    f.desc(TX_DESC, 0, BUF, (12 + MAX_FRAME + 1) as u32, 0, 0);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::TooLong), 1);
    // write-only descriptor in TX
    f.desc(TX_DESC, 0, BUF, 72, DESC_F_WRITE, 0);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::WrongDirection), 1);
    // indirect
    f.desc(TX_DESC, 0, BUF, 32, DESC_F_INDIRECT, 0);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::Indirect), 1);
    // every dropped chain was still returned
    assert_eq!(f.used_idx(TX_USED), f.tx_idx);
    // and a good frame still goes through afterwards
    f.desc(TX_DESC, 0, ok.0, ok.1, 0, 0);
    f.post(true, 0);
    assert_eq!(f.pop().map(|v| v.len()), Some(60));
    assert_eq!(f.h.stats().from_client_drops.total(), 11);
}

#[test]
fn avail_index_running_ahead_breaks_the_ring() {
    let mut f = fake(F_VERSION_1);
    f.set_avail_idx(true, QSZ + 1);
    assert_eq!(f.h.pop_tx(64, |_| panic!("no frame expected")), 0);
    assert_eq!(f.tx_drops(DropReason::RingBroken), 1);
    assert_eq!(f.h.stats().ring_resets, 1);
    assert!(!f.h.is_ready());
    assert!(f.shared.kick_out.load(std::sync::atomic::Ordering::Acquire));
    // stays stopped (no more drops counted, nothing touched)
    assert_eq!(f.h.pop_tx(64, |_| {}), 0);
    assert_eq!(f.h.stats().ring_resets, 1);
}

#[test]
fn rx_push_writes_header_and_honours_no_interrupt() {
    let mut f = fake(F_VERSION_1);
    let src = frame(60);
    f.mem.write_slice(&src, GuestAddress(BUF + 0x8000)).unwrap();
    let m = f.mem.clone();
    let seg = Segments::single(m.get_slice(GuestAddress(BUF + 0x8000), 60).unwrap());
    // no buffers
    assert_eq!(f.h.push_rx(&seg), Err(DropReason::NoBuffers));
    // too small (no MRG_RXBUF)
    f.desc(RX_DESC, 0, BUF, 40, DESC_F_WRITE, 0);
    f.post(false, 0);
    assert_eq!(f.h.push_rx(&seg), Err(DropReason::BufferTooSmall));
    // read-only descriptor in RX: consumed with length 0
    f.desc(RX_DESC, 0, BUF, 2048, 0, 0);
    assert_eq!(f.h.push_rx(&seg), Err(DropReason::WrongDirection));
    // a good buffer; the client does not want interrupts
    f.mem
        .write_obj(AVAIL_F_NO_INTERRUPT, GuestAddress(RX_AVAIL))
        .unwrap();
    f.desc(RX_DESC, 1, BUF, 2048, DESC_F_WRITE, 0);
    f.post(false, 1);
    f.h.push_rx_edit(&seg, swap_for_test).unwrap();
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 2);
    assert_eq!(f.used_elem(RX_USED, 0), (0, 0));
    assert_eq!(f.used_elem(RX_USED, 1), (1, 72));
    let mut got = [0u8; 72];
    f.mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
    assert_eq!(&got[..10], &[0u8; 10]);
    assert_eq!(&got[10..12], &1u16.to_le_bytes());
    assert_eq!(&got[12..18], &src[6..12]);
    assert_eq!(&got[18..24], &src[0..6]);
    assert_eq!(&got[24..], &src[12..]);
    assert_eq!(f.h.stats().calls, 0);
    let d = &f.h.stats().to_client_drops;
    assert_eq!(d.get(DropReason::NoBuffers), 1);
    assert_eq!(d.get(DropReason::BufferTooSmall), 1);
    assert_eq!(d.get(DropReason::WrongDirection), 1);
}

fn swap_for_test(h: &mut [u8; ETH_HLEN]) {
    twin_wire::ether::swap_macs(h)
}

#[test]
fn rx_mergeable_spreads_over_buffers() {
    let mut f = fake(F_VERSION_1 | NET_F_MRG_RXBUF | RING_F_EVENT_IDX);
    let src = frame(100);
    f.mem.write_slice(&src, GuestAddress(BUF + 0x8000)).unwrap();
    let m = f.mem.clone();
    let seg = Segments::single(m.get_slice(GuestAddress(BUF + 0x8000), 100).unwrap());
    for i in 0..3u16 {
        f.desc(RX_DESC, i, BUF + 0x100 * u64::from(i), 48, DESC_F_WRITE, 0);
        f.post(false, i);
    }
    // used_event = 0: the client wants an interrupt for the first used entry
    f.mem
        .write_obj(0u16, GuestAddress(RX_AVAIL + 4 + 2 * u64::from(QSZ)))
        .unwrap();
    f.h.push_rx(&seg).unwrap();
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 3);
    assert_eq!(f.used_elem(RX_USED, 0), (0, 48));
    assert_eq!(f.used_elem(RX_USED, 1), (1, 48));
    assert_eq!(f.used_elem(RX_USED, 2), (2, 16));
    let nb: u16 = f.mem.read_obj(GuestAddress(BUF + 10)).unwrap();
    assert_eq!(nb, 3);
    assert_eq!(f.h.stats().calls, 1);
    // not enough buffers for the next frame: dropped, nothing consumed
    f.desc(RX_DESC, 3, BUF + 0x300, 48, DESC_F_WRITE, 0);
    f.post(false, 3);
    assert_eq!(f.h.push_rx(&seg), Err(DropReason::NoBuffers));
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 3);
}

#[test]
fn stop_handshake_returns_the_data_path_index() {
    let mut f = fake(F_VERSION_1);
    f.desc(TX_DESC, 0, BUF, 72, 0, 0);
    for _ in 0..5 {
        f.post(true, 0);
    }
    assert_eq!(f.h.pop_tx(64, |_| {}), 5);
    let shared = f.shared.clone();
    let t = std::thread::spawn(move || {
        // Control thread: stop the TX ring, wait for the data path.
        let (_, mut p) = shared.snapshot();
        p.queues[TX_QUEUE].started = false;
        let gen = shared.publish(p);
        assert!(shared.wait_ack(gen, std::time::Duration::from_secs(5)));
        shared.load_last_avail(TX_QUEUE)
    });
    while !t.is_finished() {
        f.h.refresh();
        std::thread::yield_now();
    }
    assert_eq!(t.join().unwrap(), 5);
    assert!(!f.h.is_ready());
}

/// A client whose memory is a fenced (unsealed) memfd: the data path must contain
/// the fault when the client truncates it, fence the port off and ask for a
/// disconnect; the next connection works.
#[test]
fn truncated_client_memory_fences_the_port_and_a_new_connection_works() {
    use crate::fault_fence::{map_client_file, FaultFlag};
    let fd = rustix::fs::memfd_create("dp-fence-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, MEM as u64).unwrap();
    let file = File::from(fd);
    let connect = |shared: &Shared, connection: u64, file: &File| {
        let flag = Arc::new(FaultFlag::default());
        let region = map_client_file(file, 0, MEM as u64, GuestAddress(0), &flag).unwrap();
        let mem = Arc::new(ClientMemory::from_arc_regions(vec![Arc::new(region)]).unwrap());
        let mut rx = conf(RX_DESC, RX_AVAIL, RX_USED, None);
        let mut tx = conf(TX_DESC, TX_AVAIL, TX_USED, None);
        rx.base_seq = connection;
        tx.base_seq = connection;
        shared.publish(Published {
            connection,
            connected: true,
            features: F_VERSION_1,
            mem: Some(mem.clone()),
            fault: flag.clone(),
            queues: [rx, tx],
        });
        (mem, flag)
    };
    let shared = Arc::new(Shared::new().unwrap());
    let mut h = DeviceHandle::new(shared.clone(), Arc::from("fence-test"));
    let (mem, flag) = connect(&shared, 1, &file);
    assert!(matches!(h.refresh(), Some(PortEvent::Connected { .. })));
    // One good frame first.
    let data = frame(12 + 60);
    mem.write_slice(&data, GuestAddress(BUF)).unwrap();
    mem.write_obj(BUF, GuestAddress(TX_DESC)).unwrap();
    mem.write_obj(72u32, GuestAddress(TX_DESC + 8)).unwrap();
    mem.write_obj(0u16, GuestAddress(TX_AVAIL + 4)).unwrap();
    mem.write_obj(1u16, GuestAddress(TX_AVAIL + 2)).unwrap();
    assert_eq!(h.pop_tx(8, |_| {}), 1);
    assert_eq!(h.stats().from_client_packets, 1);
    // The client truncates its memory: the next batch faults, reads zeros, and the
    // port is fenced off.
    rustix::fs::ftruncate(&file, 0).unwrap();
    assert_eq!(h.pop_tx(8, |_| panic!("no frame from zeroed memory")), 0);
    assert!(flag.is_set());
    assert!(h.is_fenced());
    assert!(!h.is_ready());
    assert_eq!(h.stats().memory_faults, 1);
    assert!(shared.kick_out.load(std::sync::atomic::Ordering::Acquire));
    // Stays fenced; counted once.
    assert_eq!(h.pop_tx(8, |_| {}), 0);
    h.flush_rx();
    assert_eq!(h.stats().memory_faults, 1);
    drop(mem);
    // The control thread disconnects it; a new client connects with fresh memory.
    shared.publish(Published {
        connection: 1,
        ..Default::default()
    });
    assert_eq!(h.refresh(), Some(PortEvent::Disconnected));
    rustix::fs::ftruncate(&file, MEM as u64).unwrap();
    let (mem2, _flag2) = connect(&shared, 2, &file);
    assert!(matches!(h.refresh(), Some(PortEvent::Connected { .. })));
    assert!(!h.is_fenced());
    mem2.write_slice(&data, GuestAddress(BUF)).unwrap();
    mem2.write_obj(BUF, GuestAddress(TX_DESC)).unwrap();
    mem2.write_obj(72u32, GuestAddress(TX_DESC + 8)).unwrap();
    mem2.write_obj(0u16, GuestAddress(TX_AVAIL + 4)).unwrap();
    mem2.write_obj(1u16, GuestAddress(TX_AVAIL + 2)).unwrap();
    assert_eq!(h.pop_tx(8, |_| {}), 1);
    assert_eq!(h.stats().from_client_packets, 2);
    assert_eq!(h.stats().memory_faults, 1);
}
