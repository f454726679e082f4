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

// ---- Boundaries and state transitions, one claim per test. ----

use twin_wire::features::RING_F_EVENT_IDX as EVENT_IDX;

impl Fake {
    fn used_flags(&self, used: u64) -> u16 {
        self.mem.read_obj(GuestAddress(used)).unwrap()
    }
    /// `avail_event`, which the device writes at the end of a used ring.
    fn avail_event(&self, used: u64) -> u16 {
        self.mem
            .read_obj(GuestAddress(used + 4 + 8 * u64::from(QSZ)))
            .unwrap()
    }
    /// `used_event`, which the client writes at the end of an avail ring.
    fn set_used_event(&self, avail: u64, v: u16) {
        self.mem
            .write_obj(v, GuestAddress(avail + 4 + 2 * u64::from(QSZ)))
            .unwrap();
    }
    /// Posts one TX chain of a single descriptor (slot 0) with header + `len` bytes.
    fn post_tx_frame(&mut self, len: usize) {
        self.mem
            .write_slice(&frame(12 + len), GuestAddress(BUF))
            .unwrap();
        self.desc(TX_DESC, 0, BUF, (12 + len) as u32, 0, 0);
        self.post(true, 0);
    }
    /// Posts RX buffer `i` of `len` bytes (its own 0x1000 bytes of memory).
    fn post_rx_buffer(&mut self, i: u16, len: u32) {
        self.desc(RX_DESC, i, rx_buf(i), len, DESC_F_WRITE, 0);
        self.post(false, i);
    }
}

/// A source frame of `len` bytes (0, 1, 2, ...) in client memory.
fn source(mem: &ClientMemory, len: usize) -> Segments<'_> {
    const SRC: u64 = 0x8_0000;
    mem.write_slice(&frame(len), GuestAddress(SRC)).unwrap();
    Segments::single(mem.get_slice(GuestAddress(SRC), len).unwrap())
}

fn rx_buf(i: u16) -> u64 {
    BUF + 0x2_0000 + 0x1000 * u64::from(i)
}

#[test]
fn head_or_next_equal_to_the_queue_size_is_a_bad_index() {
    let mut f = fake(F_VERSION_1);
    f.post(true, QSZ);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::BadIndex), 1);
    f.desc(TX_DESC, 0, BUF, 12, DESC_F_NEXT, QSZ);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::BadIndex), 2);
    // One below the size is a valid index.
    f.mem.write_slice(&frame(72), GuestAddress(BUF)).unwrap();
    f.desc(TX_DESC, QSZ - 1, BUF, 72, 0, 0);
    f.post(true, QSZ - 1);
    assert_eq!(f.pop().map(|v| v.len()), Some(60));
    assert_eq!(f.h.stats().from_client_drops.total(), 2);
}

#[test]
fn a_chain_of_exactly_the_descriptor_limit_is_accepted() {
    // QSZ == MAX_CHAIN_DESCRIPTORS == 32: one data descriptor and 31 empty ones.
    assert_eq!(MAX_CHAIN_DESCRIPTORS, 32);
    let mut f = fake(F_VERSION_1);
    f.mem.write_slice(&frame(72), GuestAddress(BUF)).unwrap();
    f.desc(TX_DESC, 0, BUF, 72, DESC_F_NEXT, 1);
    for i in 1..QSZ {
        let last = i == QSZ - 1;
        f.desc(
            TX_DESC,
            i,
            BUF,
            0,
            if last { 0 } else { DESC_F_NEXT },
            i + 1,
        );
    }
    f.post(true, 0);
    assert_eq!(f.pop(), Some(frame(72)[12..].to_vec()));
    assert_eq!(f.h.stats().from_client_drops.total(), 0);
    // The same chain closed into a ring (31 -> 0) has no end: a loop.
    f.desc(TX_DESC, QSZ - 1, BUF, 0, DESC_F_NEXT, 0);
    f.post(true, 0);
    assert!(f.pop().is_none());
    assert_eq!(f.tx_drops(DropReason::ChainLoop), 1);
}

#[test]
fn tx_frames_of_exactly_the_minimum_and_maximum_length_are_delivered() {
    let mut f = fake(F_VERSION_1);
    f.post_tx_frame(ETH_HLEN);
    assert_eq!(f.pop().map(|v| v.len()), Some(ETH_HLEN));
    f.post_tx_frame(MAX_FRAME);
    assert_eq!(f.pop().map(|v| v.len()), Some(MAX_FRAME));
    assert_eq!(f.h.stats().from_client_drops.total(), 0);
    assert_eq!(f.h.stats().from_client_packets, 2);
    assert_eq!(f.h.stats().from_client_bytes, (ETH_HLEN + MAX_FRAME) as u64);
}

#[test]
fn a_ring_full_of_chains_is_consumed_in_batches_of_at_most_max() {
    let mut f = fake(F_VERSION_1);
    f.mem.write_slice(&frame(72), GuestAddress(BUF)).unwrap();
    f.desc(TX_DESC, 0, BUF, 72, 0, 0);
    // Exactly a queue size ahead: full, not broken.
    for _ in 0..QSZ {
        f.post(true, 0);
    }
    let mut seen = 0;
    assert_eq!(f.h.pop_tx(5, |_| seen += 1), 5);
    assert_eq!(seen, 5);
    assert_eq!(f.used_idx(TX_USED), 5);
    assert_eq!(f.shared.load_last_avail(TX_QUEUE), 5);
    assert_eq!(f.h.pop_tx(64, |_| seen += 1), usize::from(QSZ) - 5);
    assert_eq!(seen, usize::from(QSZ));
    assert_eq!(f.used_idx(TX_USED), QSZ);
    assert_eq!(f.shared.load_last_avail(TX_QUEUE), QSZ);
    assert!(f.h.is_ready());
    assert_eq!(f.h.stats().ring_resets, 0);
    // Nothing pending: nothing consumed, nothing published, no interrupt.
    let calls = f.h.stats().calls;
    assert_eq!(f.h.pop_tx(64, |_| panic!("no frame pending")), 0);
    assert_eq!(f.h.stats().calls, calls);
}

#[test]
fn event_idx_interrupts_only_when_the_used_index_crosses_used_event() {
    let mut f = fake(F_VERSION_1 | EVENT_IDX);
    // used_event = old - 1: moving 0 -> 1 does not cross it.
    f.set_used_event(TX_AVAIL, 0xffff);
    f.post_tx_frame(60);
    assert!(f.pop().is_some());
    assert_eq!(f.h.stats().calls, 0);
    // used_event = old: moving 1 -> 2 crosses it.
    f.set_used_event(TX_AVAIL, 1);
    f.post_tx_frame(60);
    assert!(f.pop().is_some());
    assert_eq!(f.h.stats().calls, 1);
    // used_event ahead of the new index: no interrupt.
    f.set_used_event(TX_AVAIL, 5);
    f.post_tx_frame(60);
    assert!(f.pop().is_some());
    assert_eq!(f.h.stats().calls, 1);
    // The avail flags do not matter with EVENT_IDX.
    f.mem
        .write_obj(AVAIL_F_NO_INTERRUPT, GuestAddress(TX_AVAIL))
        .unwrap();
    f.set_used_event(TX_AVAIL, 3);
    f.post_tx_frame(60);
    assert!(f.pop().is_some());
    assert_eq!(f.h.stats().calls, 2);
}

#[test]
fn tx_kicks_are_off_until_asked_for_without_event_idx() {
    let mut f = fake(F_VERSION_1);
    assert_eq!(f.used_flags(TX_USED), USED_F_NO_NOTIFY);
    assert_eq!(f.used_flags(RX_USED), USED_F_NO_NOTIFY);
    // Nothing pending: no need to poll again.
    assert!(!f.h.set_tx_notify(true));
    assert_eq!(f.used_flags(TX_USED), 0);
    f.post_tx_frame(60);
    // A frame raced in before kicks were on: poll again.
    assert!(f.h.set_tx_notify(true));
    assert!(!f.h.set_tx_notify(false));
    assert_eq!(f.used_flags(TX_USED), USED_F_NO_NOTIFY);
    assert!(f.pop().is_some());
    f.post_tx_frame(60);
    assert!(f.pop().is_some());
    // avail_event belongs to EVENT_IDX; untouched here.
    assert_eq!(f.avail_event(TX_USED), 0);
    assert_eq!(f.avail_event(RX_USED), 0);
    // A re-adopted ring keeps the kick mode asked for.
    assert!(!f.h.set_tx_notify(true));
    let (_, p) = f.shared.snapshot();
    f.shared.publish(p);
    assert_eq!(f.h.refresh(), None);
    assert_eq!(f.used_flags(TX_USED), 0);
    assert_eq!(f.used_flags(RX_USED), USED_F_NO_NOTIFY);
}

#[test]
fn tx_kicks_follow_the_consumed_index_with_event_idx() {
    let mut f = fake(F_VERSION_1 | EVENT_IDX);
    // Off: avail_event one behind what was consumed.
    assert_eq!(f.avail_event(TX_USED), 0xffff);
    assert_eq!(f.avail_event(RX_USED), 0xffff);
    for _ in 0..3 {
        f.post_tx_frame(60);
        assert!(f.pop().is_some());
    }
    assert_eq!(f.avail_event(TX_USED), 2);
    // On: avail_event at what was consumed; off again: one behind.
    assert!(!f.h.set_tx_notify(true));
    assert_eq!(f.avail_event(TX_USED), 3);
    for _ in 0..2 {
        f.post_tx_frame(60);
        assert!(f.pop().is_some());
    }
    assert_eq!(f.avail_event(TX_USED), 3, "kicks stay on while asked for");
    assert!(!f.h.set_tx_notify(false));
    assert_eq!(f.avail_event(TX_USED), 4);
    assert_eq!(f.used_flags(TX_USED), 0, "EVENT_IDX does not use the flags");
    // The RX ring never asks for kicks: one behind after each flush.
    f.post_rx_buffer(0, 2048);
    let m = f.mem.clone();
    let src = source(&m, 60);
    f.h.push_rx(&src).unwrap();
    f.h.flush_rx();
    assert_eq!(f.avail_event(RX_USED), 0);
}

#[test]
fn rx_frames_shorter_than_an_ethernet_header_or_longer_than_max_are_dropped() {
    let mut f = fake(F_VERSION_1);
    let m = f.mem.clone();
    f.post_rx_buffer(0, 4096);
    assert_eq!(
        f.h.push_rx(&source(&m, ETH_HLEN - 1)),
        Err(DropReason::TooShort)
    );
    assert_eq!(
        f.h.push_rx(&source(&m, MAX_FRAME + 1)),
        Err(DropReason::TooLong)
    );
    let d = &f.h.stats().to_client_drops;
    assert_eq!(d.get(DropReason::TooShort), 1);
    assert_eq!(d.get(DropReason::TooLong), 1);
    assert_eq!(d.total(), 2);
    // Neither consumed the buffer.
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 0);
    assert_eq!(f.h.stats().to_client_packets, 0);
}

#[test]
fn rx_frames_of_exactly_the_limits_fit_buffers_of_exactly_their_size() {
    let mut f = fake(F_VERSION_1);
    let m = f.mem.clone();
    f.post_rx_buffer(0, (12 + ETH_HLEN) as u32);
    f.post_rx_buffer(1, (12 + MAX_FRAME) as u32);
    f.h.push_rx(&source(&m, ETH_HLEN)).unwrap();
    f.h.push_rx(&source(&m, MAX_FRAME)).unwrap();
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 2);
    assert_eq!(f.used_elem(RX_USED, 0), (0, (12 + ETH_HLEN) as u32));
    assert_eq!(f.used_elem(RX_USED, 1), (1, (12 + MAX_FRAME) as u32));
    let mut got = vec![0u8; MAX_FRAME];
    f.mem
        .read_slice(&mut got, GuestAddress(rx_buf(1) + 12))
        .unwrap();
    assert_eq!(got, frame(MAX_FRAME));
    assert_eq!(f.h.stats().to_client_packets, 2);
    assert_eq!(f.h.stats().to_client_bytes, (ETH_HLEN + MAX_FRAME) as u64);
    // One byte short of header + frame: too small.
    f.post_rx_buffer(2, (12 + 60 - 1) as u32);
    assert_eq!(
        f.h.push_rx(&source(&m, 60)),
        Err(DropReason::BufferTooSmall)
    );
}

#[test]
fn push_rx_without_rings_is_not_ready() {
    let shared = Arc::new(Shared::new().unwrap());
    let mut h = DeviceHandle::new(shared, Arc::from("idle"));
    let mem = ClientMemory::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    mem.write_slice(&frame(60), GuestAddress(0)).unwrap();
    let seg = Segments::single(mem.get_slice(GuestAddress(0), 60).unwrap());
    assert_eq!(h.push_rx(&seg), Err(DropReason::NotReady));
    assert_eq!(h.stats().to_client_drops.get(DropReason::NotReady), 1);
    assert_eq!(h.pop_tx(8, |_| panic!("no ring")), 0);
    assert!(!h.set_tx_notify(true));
    assert!(!h.is_ready());
    assert_eq!(h.tx_kick_fd(), None);
    assert!(h.drain_tx_kick().is_ok());
}

#[test]
fn rx_avail_index_running_ahead_breaks_the_rx_ring() {
    let mut f = fake(F_VERSION_1);
    let m = f.mem.clone();
    f.set_avail_idx(false, QSZ + 1);
    assert_eq!(f.h.push_rx(&source(&m, 60)), Err(DropReason::RingBroken));
    assert_eq!(f.h.stats().to_client_drops.get(DropReason::RingBroken), 1);
    assert_eq!(f.h.stats().ring_resets, 1);
    assert!(!f.h.is_ready());
    assert!(f.shared.kick_out.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(f.h.push_rx(&source(&m, 60)), Err(DropReason::NotReady));
    assert_eq!(f.h.stats().ring_resets, 1);
}

#[test]
fn rx_avail_index_exactly_a_queue_size_ahead_is_usable() {
    let mut f = fake(F_VERSION_1);
    let m = f.mem.clone();
    for i in 0..QSZ {
        f.post_rx_buffer(i, 2048);
    }
    for _ in 0..QSZ {
        f.h.push_rx(&source(&m, 60)).unwrap();
    }
    assert_eq!(f.h.push_rx(&source(&m, 60)), Err(DropReason::NoBuffers));
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), QSZ);
    assert_eq!(f.shared.load_last_avail(RX_QUEUE), QSZ);
    assert_eq!(f.h.stats().ring_resets, 0);
}

#[test]
fn mergeable_rx_takes_exactly_the_buffers_a_frame_needs() {
    let mut f = fake(F_VERSION_1 | NET_F_MRG_RXBUF);
    let m = f.mem.clone();
    for i in 0..3 {
        f.post_rx_buffer(i, 36);
    }
    // 12 + 60 = 72 bytes: exactly two buffers.
    f.h.push_rx(&source(&m, 60)).unwrap();
    // The third buffer is left for the next frame: 12 + 14 = 26 bytes.
    f.h.push_rx(&source(&m, ETH_HLEN)).unwrap();
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 3);
    assert_eq!(f.used_elem(RX_USED, 0), (0, 36));
    assert_eq!(f.used_elem(RX_USED, 1), (1, 36));
    assert_eq!(f.used_elem(RX_USED, 2), (2, 26));
    let nb = |i| -> u16 { f.mem.read_obj(GuestAddress(rx_buf(i) + 10)).unwrap() };
    assert_eq!(nb(0), 2);
    assert_eq!(nb(2), 1);
    let mut got = vec![0u8; 60];
    f.mem
        .read_slice(&mut got[..24], GuestAddress(rx_buf(0) + 12))
        .unwrap();
    f.mem
        .read_slice(&mut got[24..], GuestAddress(rx_buf(1)))
        .unwrap();
    assert_eq!(got, frame(60));
}

#[test]
fn mergeable_rx_spans_at_most_max_segments_buffers() {
    let mut f = fake(F_VERSION_1 | NET_F_MRG_RXBUF);
    let m = f.mem.clone();
    // 17 buffers of 4 bytes: 16 of them hold 64 bytes, less than 12 + 60.
    for i in 0..17 {
        f.post_rx_buffer(i, 4);
    }
    assert_eq!(f.h.push_rx(&source(&m, 60)), Err(DropReason::NoBuffers));
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 0, "nothing consumed");
    // 16 of them do hold 12 + 52 bytes.
    f.h.push_rx(&source(&m, 52)).unwrap();
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 16);
    // num_buffers: bytes 10 and 11 of the header, in the third 4-byte buffer.
    assert_eq!(
        f.mem.read_obj::<u16>(GuestAddress(rx_buf(2) + 2)).unwrap(),
        16
    );
    assert_eq!(f.h.stats().to_client_drops.total(), 1);
}

#[test]
fn a_bad_rx_chain_is_returned_with_the_buffers_gathered_before_it() {
    let mut f = fake(F_VERSION_1 | NET_F_MRG_RXBUF);
    let m = f.mem.clone();
    f.post_rx_buffer(0, 36);
    // Buffer 1 is read-only: wrong direction.
    f.desc(RX_DESC, 1, rx_buf(1), 36, 0, 0);
    f.post(false, 1);
    f.post_rx_buffer(2, 2048);
    assert_eq!(
        f.h.push_rx(&source(&m, 60)),
        Err(DropReason::WrongDirection)
    );
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 2);
    assert_eq!(f.used_elem(RX_USED, 0), (0, 0));
    assert_eq!(f.used_elem(RX_USED, 1), (1, 0));
    // The next frame takes the next buffer.
    f.h.push_rx(&source(&m, 60)).unwrap();
    f.h.flush_rx();
    assert_eq!(f.used_idx(RX_USED), 3);
    assert_eq!(f.used_elem(RX_USED, 2), (2, 72));
    assert_eq!(f.shared.load_last_avail(RX_QUEUE), 3);
}

#[test]
fn an_edit_that_changes_nothing_leaves_the_copy_as_it_was() {
    let mut f = fake(F_VERSION_1);
    let m = f.mem.clone();
    f.post_rx_buffer(0, 2048);
    let mut seen = [0u8; ETH_HLEN];
    f.h.push_rx_edit(&source(&m, 60), |h| seen = *h).unwrap();
    assert_eq!(&seen[..], &frame(60)[..ETH_HLEN]);
    let mut got = vec![0u8; 60];
    f.mem
        .read_slice(&mut got, GuestAddress(rx_buf(0) + 12))
        .unwrap();
    assert_eq!(got, frame(60));
}

#[test]
fn reflect_tx_sends_each_frame_back_edited() {
    let mut f = fake(F_VERSION_1);
    f.post_rx_buffer(0, 2048);
    f.post_tx_frame(60);
    f.post_tx_frame(60);
    assert_eq!(f.h.reflect_tx(8, swap_for_test), 2);
    // Both TX chains returned; the first frame reflected, the second had no buffer.
    assert_eq!(f.used_idx(TX_USED), 2);
    assert_eq!(f.used_idx(RX_USED), 1, "published by reflect_tx itself");
    assert_eq!(f.used_elem(RX_USED, 0), (0, 72));
    let src = frame(72);
    let mut got = vec![0u8; 60];
    f.mem
        .read_slice(&mut got, GuestAddress(rx_buf(0) + 12))
        .unwrap();
    assert_eq!(&got[..6], &src[12 + 6..12 + 12]);
    assert_eq!(&got[6..12], &src[12..12 + 6]);
    assert_eq!(&got[12..], &src[12 + 12..]);
    let s = f.h.stats();
    assert_eq!(s.from_client_packets, 2);
    assert_eq!(s.to_client_packets, 1);
    assert_eq!(s.to_client_bytes, 60);
    assert_eq!(s.to_client_drops.get(DropReason::NoBuffers), 1);
    assert_eq!(f.shared.load_last_avail(TX_QUEUE), 2);
    assert_eq!(f.shared.load_last_avail(RX_QUEUE), 1);
}

#[test]
fn reflect_tx_breaks_an_rx_ring_whose_avail_index_ran_ahead() {
    let mut f = fake(F_VERSION_1);
    f.set_avail_idx(false, QSZ + 1);
    f.post_tx_frame(60);
    assert_eq!(f.h.reflect_tx(8, |_| {}), 1);
    assert_eq!(f.h.stats().to_client_drops.get(DropReason::RingBroken), 1);
    assert_eq!(f.h.stats().ring_resets, 1);
    assert!(!f.h.is_ready());
    assert!(f.shared.kick_out.load(std::sync::atomic::Ordering::Acquire));
    // The TX chain was still returned.
    assert_eq!(f.used_idx(TX_USED), 1);
}

/// A snapshot of one connection with both rings running from `base`.
fn published(mem: &Arc<ClientMemory>, connection: u64, base: u16, base_seq: u64) -> Published {
    let mut rx = conf(RX_DESC, RX_AVAIL, RX_USED, None);
    let mut tx = conf(TX_DESC, TX_AVAIL, TX_USED, None);
    for q in [&mut rx, &mut tx] {
        q.base = base;
        q.base_seq = base_seq;
    }
    Published {
        connection,
        connected: true,
        features: F_VERSION_1,
        mem: Some(mem.clone()),
        fault: Default::default(),
        queues: [rx, tx],
    }
}

fn new_handle() -> (Arc<ClientMemory>, Arc<Shared>, DeviceHandle) {
    let mem = Arc::new(ClientMemory::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
    let shared = Arc::new(Shared::new().unwrap());
    let h = DeviceHandle::new(shared.clone(), Arc::from("port-7"));
    (mem, shared, h)
}

#[test]
fn port_events_follow_connect_stop_reconnect_and_disconnect() {
    let (mem, shared, mut h) = new_handle();
    assert_eq!(h.refresh(), None, "the first snapshot has no client");
    assert_eq!(h.refresh(), None, "nothing new");
    // Connected, but only the TX ring runs: not ready, no event.
    let mut p = published(&mem, 1, 0, 1);
    p.queues[RX_QUEUE].started = false;
    shared.publish(p.clone());
    assert_eq!(h.refresh(), None);
    assert!(!h.is_ready());
    // Both rings: ready.
    p.queues[RX_QUEUE].started = true;
    p.features = F_VERSION_1 | NET_F_MRG_RXBUF;
    shared.publish(p.clone());
    assert_eq!(
        h.refresh(),
        Some(PortEvent::Connected {
            features: F_VERSION_1 | NET_F_MRG_RXBUF,
            connection: 1
        })
    );
    assert!(h.is_ready());
    assert_eq!(h.features(), F_VERSION_1 | NET_F_MRG_RXBUF);
    assert_eq!(h.generation(), shared.generation());
    // The same state again: no event.
    shared.publish(p.clone());
    assert_eq!(h.refresh(), None);
    // The client's driver stops a ring (a reset): stopped, still connected.
    p.queues[TX_QUEUE].started = false;
    shared.publish(p.clone());
    assert_eq!(h.refresh(), Some(PortEvent::Stopped));
    assert!(!h.is_ready());
    // Another client took the socket while the port was stopped.
    shared.publish(published(&mem, 2, 0, 2));
    assert_eq!(
        h.refresh(),
        Some(PortEvent::Connected {
            features: F_VERSION_1,
            connection: 2
        })
    );
    assert_eq!((h.stats().connects, h.stats().disconnects), (2, 0));
    // ... and another while it was ready: counted as a disconnect and a connect.
    shared.publish(published(&mem, 3, 0, 3));
    assert_eq!(
        h.refresh(),
        Some(PortEvent::Connected {
            features: F_VERSION_1,
            connection: 3
        })
    );
    assert_eq!((h.stats().connects, h.stats().disconnects), (3, 1));
    // The client goes away.
    shared.publish(Published {
        connection: 3,
        ..Default::default()
    });
    assert_eq!(h.refresh(), Some(PortEvent::Disconnected));
    assert_eq!((h.stats().connects, h.stats().disconnects), (3, 2));
    assert!(!h.is_ready());
    assert_eq!(h.refresh(), None);
}

#[test]
fn a_client_that_connects_and_leaves_without_rings_is_a_disconnect() {
    let (mem, shared, mut h) = new_handle();
    let mut p = published(&mem, 1, 0, 1);
    p.queues[TX_QUEUE].started = false;
    shared.publish(p);
    assert_eq!(h.refresh(), None);
    // A new connection replaces it, still without rings: the old one left.
    let mut p = published(&mem, 2, 0, 2);
    p.queues[TX_QUEUE].enabled = false;
    shared.publish(p);
    assert_eq!(h.refresh(), Some(PortEvent::Disconnected));
    assert_eq!((h.stats().connects, h.stats().disconnects), (0, 1));
}

#[test]
fn a_new_base_restarts_both_rings_from_it_and_is_stored() {
    let (mem, shared, mut h) = new_handle();
    shared.publish(published(&mem, 1, 7, 1));
    assert!(matches!(h.refresh(), Some(PortEvent::Connected { .. })));
    assert_eq!(shared.load_last_avail(TX_QUEUE), 7);
    assert_eq!(shared.load_last_avail(RX_QUEUE), 7);
    // One TX chain in slot 7, avail idx 8.
    mem.write_slice(&frame(72), GuestAddress(BUF)).unwrap();
    mem.write_obj(BUF, GuestAddress(TX_DESC + 16 * 3)).unwrap();
    mem.write_obj(72u32, GuestAddress(TX_DESC + 16 * 3 + 8))
        .unwrap();
    mem.write_obj(3u16, GuestAddress(TX_AVAIL + 4 + 2 * 7))
        .unwrap();
    mem.write_obj(8u16, GuestAddress(TX_AVAIL + 2)).unwrap();
    assert_eq!(h.pop_tx(8, |_| {}), 1);
    assert_eq!(mem.read_obj::<u16>(GuestAddress(TX_USED + 2)).unwrap(), 8);
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(TX_USED + 4 + 8 * 7))
            .unwrap(),
        3
    );
    assert_eq!(shared.load_last_avail(TX_QUEUE), 8);
    // The same base sequence again keeps the data path's index.
    shared.publish(published(&mem, 1, 7, 1));
    assert_eq!(h.refresh(), None);
    assert_eq!(shared.load_last_avail(TX_QUEUE), 8);
}

#[test]
fn a_ring_outside_the_client_memory_is_rejected_and_the_client_kicked_out() {
    let (mem, shared, mut h) = new_handle();
    let mut p = published(&mem, 1, 0, 1);
    p.queues[TX_QUEUE].used = MEM as u64 - 8;
    shared.publish(p);
    assert_eq!(h.refresh(), None);
    assert!(!h.is_ready());
    assert_eq!(h.stats().ring_resets, 1);
    assert!(shared.kick_out.load(std::sync::atomic::Ordering::Acquire));
}

#[test]
fn a_broken_ring_stays_stopped_until_the_client_sets_a_new_base() {
    let mut f = fake(F_VERSION_1);
    f.set_avail_idx(true, QSZ + 1);
    assert_eq!(f.h.pop_tx(8, |_| {}), 0);
    assert!(!f.h.is_ready());
    let (_, p) = f.shared.snapshot();
    f.shared.publish(p.clone());
    assert_eq!(f.h.refresh(), None);
    assert!(
        !f.h.is_ready(),
        "re-adopting the same ring does not revive it"
    );
    let mut p2 = p;
    p2.queues[TX_QUEUE].base_seq += 1;
    f.shared.publish(p2);
    assert!(matches!(f.h.refresh(), Some(PortEvent::Connected { .. })));
    assert!(f.h.is_ready());
    assert_eq!(f.h.stats().ring_resets, 1);
}

#[test]
fn a_fault_seen_at_a_refresh_fences_the_port_once() {
    let (mem, shared, mut h) = new_handle();
    let p = published(&mem, 1, 0, 1);
    let flag = p.fault.clone();
    shared.publish(p);
    assert!(matches!(h.refresh(), Some(PortEvent::Connected { .. })));
    assert!(!h.is_fenced());
    flag.set();
    let (_, p) = shared.snapshot();
    shared.publish(p);
    // Fenced while it flushes the old rings, before it looks at the snapshot.
    assert_eq!(h.refresh(), None);
    assert!(h.is_fenced());
    assert!(!h.is_ready());
    assert_eq!(h.stats().memory_faults, 1);
    assert!(shared.kick_out.load(std::sync::atomic::Ordering::Acquire));
    // Fenced stays fenced for this connection, counted once.
    let (_, p) = shared.snapshot();
    shared.publish(p);
    assert_eq!(h.refresh(), None);
    assert!(!h.is_ready());
    assert_eq!(h.stats().memory_faults, 1);
}

#[test]
fn a_new_connection_whose_memory_already_faulted_is_fenced_at_adoption() {
    let (mem, shared, mut h) = new_handle();
    shared.publish(published(&mem, 1, 0, 1));
    assert!(matches!(h.refresh(), Some(PortEvent::Connected { .. })));
    let p = published(&mem, 2, 0, 2);
    p.fault.set();
    shared.publish(p);
    assert_eq!(h.refresh(), Some(PortEvent::Disconnected));
    assert!(h.is_fenced());
    assert!(!h.is_ready());
    assert_eq!(h.stats().memory_faults, 1);
    // A third connection with sound memory is not fenced.
    shared.publish(published(&mem, 3, 0, 3));
    assert!(matches!(
        h.refresh(),
        Some(PortEvent::Connected { connection: 3, .. })
    ));
    assert!(!h.is_fenced());
}

#[test]
fn pending_changes_are_seen_until_adopted() {
    let (mem, shared, mut h) = new_handle();
    assert!(h.has_pending_change(), "the first snapshot is pending");
    h.refresh();
    assert!(!h.has_pending_change());
    shared.publish(published(&mem, 1, 0, 1));
    assert!(h.has_pending_change());
    h.refresh();
    assert!(!h.has_pending_change());
}

#[test]
fn the_handle_names_its_port_and_tells_the_control_thread_when_it_is_gone() {
    let (_mem, shared, h) = new_handle();
    assert_eq!(h.name(), "port-7");
    assert!(shared
        .handle_alive
        .load(std::sync::atomic::Ordering::Acquire));
    drop(h);
    assert!(!shared
        .handle_alive
        .load(std::sync::atomic::Ordering::Acquire));
    // Nobody will acknowledge: a ring stop does not wait.
    assert!(shared.wait_ack(u64::MAX, std::time::Duration::from_secs(60)));
}

#[test]
fn kick_and_wake_eventfds_are_exposed_and_drained() {
    use rustix::event::{eventfd, EventfdFlags};
    let (mem, shared, mut h) = new_handle();
    let kick = Arc::new(File::from(
        eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap(),
    ));
    let mut p = published(&mem, 1, 0, 1);
    p.queues[TX_QUEUE].kick = Some(kick.clone());
    shared.publish(p);
    assert_eq!(h.wake_fd(), shared.wake.as_raw_fd());
    // The publish woke the data path; draining consumes it.
    h.drain_wake();
    assert!(shared.wake.read().is_err(), "wake drained");
    h.refresh();
    assert_eq!(h.tx_kick_fd(), Some(kick.as_raw_fd()));
    (&*kick).write_all(&1u64.to_ne_bytes()).unwrap();
    h.drain_tx_kick().unwrap();
    let mut b = [0u8; 8];
    assert!((&*kick).read(&mut b).is_err(), "kick drained");
    // Nothing pending on a non-blocking kick: the read fails and says so.
    assert!(matches!(h.drain_tx_kick(), Err(Error::EventFd(_))));
}

#[test]
fn drops_are_logged_by_reason_at_their_level_and_rate_limited() {
    use crate::test_log::Capture;
    use tracing::Level;
    let log = Capture::default();
    log.run(|| {
        let mut f = fake(F_VERSION_1);
        let m = f.mem.clone();
        // A client without receive buffers is ordinary: debug lines, at most
        // LOG_PER_SEC of them a second.
        for _ in 0..LOG_PER_SEC + 2 {
            assert_eq!(f.h.push_rx(&source(&m, 60)), Err(DropReason::NoBuffers));
        }
        // A bad chain is hostile: a warning.
        f.post(true, QSZ);
        assert!(f.pop().is_none());
    });
    let drops: Vec<_> = log
        .lines()
        .into_iter()
        .filter(|l| l.message == "frame dropped")
        .collect();
    let with = |l: &crate::test_log::Line, f: &str| l.fields.iter().any(|x| x == f);
    assert_eq!(drops.len(), LOG_PER_SEC as usize + 1, "{drops:?}");
    for l in &drops[..LOG_PER_SEC as usize] {
        assert_eq!(l.level, Level::DEBUG);
        assert!(
            with(l, "reason=no_buffers") && with(l, "dir=to_client"),
            "{l:?}"
        );
    }
    let last = &drops[LOG_PER_SEC as usize];
    assert_eq!(last.level, Level::WARN);
    assert!(
        with(last, "reason=bad_index") && with(last, "dir=from_client"),
        "{last:?}"
    );
    assert!(with(last, "port=test"), "{last:?}");
}

#[test]
fn ring_broken_warnings_are_rate_limited_per_queue() {
    use crate::test_log::Capture;
    let log = Capture::default();
    log.run(|| {
        let mut f = fake(F_VERSION_1);
        let m = f.mem.clone();
        // Break the RX ring three times (a new base revives it each time): each
        // break logs a dropped frame and a ring warning, on the RX limiter.
        for i in 0..3u16 {
            f.set_avail_idx(false, f.rx_idx.wrapping_add(QSZ + 1));
            assert_eq!(f.h.push_rx(&source(&m, 60)), Err(DropReason::RingBroken));
            let (_, mut p) = f.shared.snapshot();
            p.queues[RX_QUEUE].base_seq += 1;
            f.shared.publish(p);
            f.h.refresh();
            assert!(f.h.is_ready(), "revived {i}");
        }
        // Then the TX ring once: its own limiter lets its warning through.
        f.set_avail_idx(true, QSZ + 1);
        assert_eq!(f.h.pop_tx(8, |_| {}), 0);
    });
    let broken: Vec<_> = log
        .lines()
        .into_iter()
        .filter(|l| {
            l.message
                .starts_with("avail index ran more than the queue size ahead")
        })
        .collect();
    let on = |q: &str| {
        broken
            .iter()
            .filter(|l| l.fields.iter().any(|f| f == q))
            .count()
    };
    // RX: 6 lines wanted (3 drops, 3 warnings), 5 a second allowed: 2 warnings.
    assert_eq!(on("queue=0"), 2, "{broken:?}");
    assert_eq!(on("queue=1"), 1, "{broken:?}");
}
