//! The macro on a tiny fake driver over `VecEnv`: upcall encoding, stubs in both
//! routes, the dispatcher, and the twin's delegating methods.

use driver_env::test_env::VecEnv;
use driver_env::{
    DriverEnv, DriverMem, FaultKind, MemFault, UpcallError, UpcallMsg, UpcallRoute, UPCALL_MAX_ARGS,
};

/// Where the fake keeps things in its region.
const COUNTER: u64 = 0;
const LOG: u64 = 8;
const LAST: u64 = 16;

/// A fake driver: a counter in its region, bumped on the fast path; slow paths
/// record things further up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fake {
    polls: u32,
}

#[twin_derive::twin_driver(twin = FakeTwin, upcall = FakeUpcall, dispatch_error = FakeDispatchError)]
impl Fake {
    /// Unmarked: kept as is.
    pub fn new() -> Self {
        Self { polls: 0 }
    }

    /// Bumps the counter by `n`; reports overflow past 10 (slow path) and logs.
    #[fast_path]
    pub fn poll<E: DriverEnv>(&mut self, env: &E, mut n: u32) -> Result<u32, MemFault> {
        self.polls += 1;
        n += env.read_u64(COUNTER)? as u32;
        env.write_u64(COUNTER, u64::from(n))?;
        if n > 10 {
            self.overflow(env, n, true, -3)?;
        }
        self.log(env);
        Ok(n)
    }

    /// Calls `f` with the counter (an `impl Trait` argument, a `mut` pattern).
    #[fast_path]
    pub fn each<E: DriverEnv>(&self, env: &E, mut f: impl FnMut(u64)) -> Result<(), MemFault> {
        f(env.read_u64(COUNTER)?);
        Ok(())
    }

    /// How often `poll` ran.
    #[fast_path]
    #[must_use]
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// Whether `other` polled as often (`Self` in a signature).
    #[fast_path]
    pub fn same_as(&self, other: &Self) -> bool {
        self.polls == other.polls
    }

    /// A borrowed result with a named lifetime and a where clause.
    #[fast_path]
    pub fn pick<'a, T>(&'a self, items: &'a [T], (): ()) -> Option<&'a T>
    where
        T: Copy,
    {
        items.get(self.polls as usize)
    }

    /// Consumes the handle.
    #[fast_path]
    pub fn into_polls(self) -> u32 {
        self.polls
    }

    /// Records an overflow of the counter.
    #[slow_path]
    fn overflow<E: DriverEnv>(
        &mut self,
        env: &E,
        value: u32,
        flag: bool,
        delta: i32,
    ) -> Result<(), MemFault> {
        let delta = i64::from(delta) as u64;
        env.write_u64(
            LAST,
            u64::from(value) | (u64::from(flag) << 32) | (delta << 40),
        )
    }

    /// Counts calls (a unit routine with `&self`).
    #[slow_path]
    fn log<E: DriverEnv>(&self, env: &E) {
        let _ = env.write_u64(LOG, env.read_u64(LOG).unwrap_or(0) + 1);
    }

    /// Every other argument type.
    #[slow_path]
    pub fn wide<E: DriverEnv>(&mut self, env: &E, a: u8, b: i64, c: usize) -> Result<(), MemFault> {
        env.write_u64(LAST, u64::from(a) ^ (b as u64) ^ (c as u64))
    }

    /// And the rest.
    #[slow_path]
    pub fn narrow<E: DriverEnv>(&mut self, env: &E, a: u16, b: u64) -> Result<(), MemFault> {
        env.write_u64(LAST, u64::from(a) + b)
    }
}

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

#[test]
fn tables() {
    assert_eq!(
        Fake::TWIN_ENTRY_POINTS,
        &["poll", "each", "polls", "same_as", "pick", "into_polls"]
    );
    assert_eq!(
        Fake::SLOW_PATH_ROUTINES,
        &["overflow", "log", "wide", "narrow"]
    );
    assert_eq!(
        FakeUpcall::ROUTINES,
        &[(1, "overflow"), (2, "log"), (3, "wide"), (4, "narrow")]
    );
    let u = FakeUpcall::Log {};
    assert_eq!((u.op(), u.name()), (2, "log"));
}

#[test]
fn encode_decode_round_trip() {
    let calls = [
        FakeUpcall::Overflow {
            value: u32::MAX,
            flag: true,
            delta: i32::MIN,
        },
        FakeUpcall::Overflow {
            value: 0,
            flag: false,
            delta: -1,
        },
        FakeUpcall::Log {},
        FakeUpcall::Wide {
            a: 255,
            b: i64::MIN,
            c: usize::MAX,
        },
        FakeUpcall::Narrow { a: 7, b: u64::MAX },
    ];
    for c in calls {
        let m = c.encode();
        assert_eq!(m.op, c.op());
        assert_eq!(FakeUpcall::decode(&m), Ok(c), "{m:?}");
    }
    assert_eq!(
        FakeUpcall::Overflow {
            value: 5,
            flag: true,
            delta: -1
        }
        .encode(),
        UpcallMsg {
            op: 1,
            args: [5, 1, u64::MAX]
        }
    );
    assert_eq!(FakeUpcall::Log {}.encode().args, [0; UPCALL_MAX_ARGS]);
}

#[test]
fn decode_rejects_bad_messages() {
    let m = |op, args| UpcallMsg { op, args };
    assert_eq!(
        FakeUpcall::decode(&m(0, [0; 3])),
        Err(UpcallError::UnknownOp(0))
    );
    assert_eq!(
        FakeUpcall::decode(&m(5, [0; 3])),
        Err(UpcallError::UnknownOp(5))
    );
    let bad = |op, index, value| Err(UpcallError::BadArg { op, index, value });
    // u32 too large, bool not 0/1, i32 out of range.
    assert_eq!(
        FakeUpcall::decode(&m(1, [1 << 32, 0, 0])),
        bad(1, 0, 1 << 32)
    );
    assert_eq!(FakeUpcall::decode(&m(1, [1, 2, 0])), bad(1, 1, 2));
    assert_eq!(
        FakeUpcall::decode(&m(1, [1, 0, 1 << 31])),
        bad(1, 2, 1 << 31)
    );
    let below = (i64::from(i32::MIN) - 1) as u64;
    assert_eq!(FakeUpcall::decode(&m(1, [1, 0, below])), bad(1, 2, below));
    // Unused arguments must be 0.
    assert_eq!(FakeUpcall::decode(&m(2, [0, 0, 9])), bad(2, 2, 9));
    assert_eq!(FakeUpcall::decode(&m(4, [1, 2, 3])), bad(4, 2, 3));
    // u8 and u16 narrowing.
    assert_eq!(FakeUpcall::decode(&m(3, [256, 0, 0])), bad(3, 0, 256));
    assert_eq!(FakeUpcall::decode(&m(4, [65536, 0, 0])), bad(4, 0, 65536));
}

#[test]
fn stubs_run_in_place_when_local() {
    let env = VecEnv::new(64);
    let mut d = Fake::new();
    assert_eq!(d.poll(&env, 4).unwrap(), 4);
    assert_eq!(d.poll(&env, 8).unwrap(), 12);
    assert!(env.take_posted().is_empty());
    assert_eq!(env.read_u64(LOG).unwrap(), 2);
    assert_eq!(
        env.read_u64(LAST).unwrap(),
        12 | (1 << 32) | ((-3i64 as u64) << 40)
    );
}

#[test]
fn stubs_post_when_routed_to_the_domain() {
    let env = VecEnv::new(64);
    env.set_upcall_route(UpcallRoute::Posted);
    let mut d = Fake::new();
    assert_eq!(d.poll(&env, 11).unwrap(), 11);
    let posted = env.take_posted();
    assert_eq!(
        posted
            .iter()
            .map(|m| FakeUpcall::decode(m).unwrap())
            .collect::<Vec<_>>(),
        vec![
            FakeUpcall::Overflow {
                value: 11,
                flag: true,
                delta: -3
            },
            FakeUpcall::Log {}
        ]
    );
    // Nothing ran in place.
    assert_eq!(env.read_u64(LOG).unwrap(), 0);
    assert_eq!(env.read_u64(LAST).unwrap(), 0);
    // Dropped: the stub still reports success, nothing is recorded.
    env.set_upcall_route(UpcallRoute::Dropped);
    assert_eq!(d.poll(&env, 1).unwrap(), 12);
    assert!(env.take_posted().is_empty());
    assert_eq!(env.read_u64(LAST).unwrap(), 0);
}

#[test]
fn dispatcher_runs_the_routine_in_place() {
    let twin_env = VecEnv::new(64);
    twin_env.set_upcall_route(UpcallRoute::Posted);
    let mut twin = Fake::new();
    twin.poll(&twin_env, 20).unwrap();
    let posted = twin_env.take_posted();
    assert_eq!(posted.len(), 2);

    // The domain's environment routes Posted too: the dispatcher must not care.
    let dom_env = VecEnv::new(64);
    dom_env.set_upcall_route(UpcallRoute::Posted);
    let mut dom = Fake::new();
    for m in &posted {
        dom.dispatch_upcall(&dom_env, m).unwrap();
    }
    assert!(dom_env.take_posted().is_empty());
    assert_eq!(dom_env.read_u64(LOG).unwrap(), 1);
    assert_eq!(
        dom_env.read_u64(LAST).unwrap(),
        20 | (1 << 32) | ((-3i64 as u64) << 40)
    );
    let call = dom
        .dispatch_upcall(&dom_env, &FakeUpcall::Narrow { a: 1, b: 2 }.encode())
        .unwrap();
    assert_eq!(call, FakeUpcall::Narrow { a: 1, b: 2 });
    assert_eq!(dom_env.read_u64(LAST).unwrap(), 3);

    // A routine's failure and a bad message are told apart.
    dom_env.protect(LAST..LAST + 8);
    let err = dom
        .dispatch_upcall(&dom_env, &FakeUpcall::Narrow { a: 1, b: 2 }.encode())
        .unwrap_err();
    assert_eq!(
        err,
        FakeDispatchError::Routine {
            routine: "narrow",
            error: MemFault::new(LAST, 8, FaultKind::Permission)
        }
    );
    assert_eq!(err.to_string(), "slow-path routine narrow failed");
    assert!(std::error::Error::source(&err).is_some());
    let err = dom
        .dispatch_upcall(
            &dom_env,
            &UpcallMsg {
                op: 9,
                args: [0; 3],
            },
        )
        .unwrap_err();
    assert_eq!(err, FakeDispatchError::Decode(UpcallError::UnknownOp(9)));
    assert_eq!(err.to_string(), "invalid upcall");
}

#[test]
fn twin_delegates_to_the_fast_path() {
    let env = VecEnv::new(64);
    env.set_upcall_route(UpcallRoute::Posted);
    let mut t = FakeTwin::new(Fake::new());
    assert_eq!(t.poll(&env, 3).unwrap(), 3);
    let mut seen = Vec::new();
    t.each(&env, |v| seen.push(v)).unwrap();
    assert_eq!(seen, vec![3]);
    assert_eq!(t.polls(), 1);
    assert!(t.same_as(t.inner()));
    assert_eq!(t.pick(&[10, 20, 30], ()), Some(&20));
    assert_eq!(env.take_posted(), vec![FakeUpcall::Log {}.encode()]);
    let copy = t.clone();
    assert_eq!(t.inner_mut().polls(), 1);
    assert_eq!(copy.into_polls(), 1);
    assert_eq!(t.into_inner(), Fake { polls: 1 });
}
