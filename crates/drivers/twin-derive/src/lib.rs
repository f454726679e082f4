#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Derives a driver's twin from its source: the *semi-automatic derivation* of
//! TwinDrivers.
//!
//! A driver is written once against `driver_env::DriverEnv`. Its author marks, in
//! one inherent `impl` block, the methods the switch may call on the data path
//! (`#[fast_path]`) and the support routines that must run in the driver domain
//! (`#[slow_path]`), and puts [`macro@twin_driver`] on the block:
//!
//! ```text
//! #[twin_derive::twin_driver(twin = VirtioNetTwin, upcall = VirtioNetUpcall)]
//! impl VirtioNet {
//!     /// Publishes the TX batch.
//!     #[fast_path]
//!     pub fn tx_flush<E: DriverEnv>(&mut self, env: &E) -> Result<bool, NetError> { .. }
//!
//!     /// Records device errors in the driver domain's private page.
//!     #[slow_path]
//!     fn device_error<E: DriverEnv>(&mut self, env: &E, queue: u16, count: u32)
//!         -> Result<(), NetError> { .. }
//!
//!     /// Domain only (unmarked: kept as is).
//!     pub fn init<E: DriverEnv>(env: &E) -> Result<Self, NetError> { .. }
//! }
//! ```
//!
//! The macro generates, next to the block:
//!
//! * the **upcall enum** (`upcall = Name`): one variant per slow-path routine, its
//!   fields the routine's arguments, with `op`, `name`, `encode`, `decode` and the
//!   table `ROUTINES`;
//! * the **stubs**: each slow-path routine keeps its name and signature, so fast-path
//!   code calls it unchanged, but its body asks the environment to route an upcall:
//!   in the driver domain (`UpcallRoute::Local`) the original body, moved to a private
//!   `<name>_in_domain`, runs in place; in a twin the message is posted to the domain
//!   and the stub returns success at once;
//! * the **dispatcher** `dispatch_upcall` on the driver type, which the driver domain
//!   calls with a message a twin posted; its error type is a generic enum named by
//!   `dispatch_error = Name` (default `UpcallDispatchError`);
//! * the **twin entry table** (`twin = Name`): a newtype over the driver with one
//!   delegating method per fast-path method, and the associated consts
//!   `TWIN_ENTRY_POINTS` and `SLOW_PATH_ROUTINES` on the driver type.
//!
//! Rules (each violation is a `compile_error!` at the offending tokens):
//!
//! * the block is an inherent impl of a non-generic type;
//! * a fast-path method has a receiver (`self`, `&self`, `&mut self`), is neither
//!   `async` nor `unsafe`;
//! * a slow-path routine takes `&self` or `&mut self`, then the environment
//!   (`env: &E`, `E: DriverEnv`), then at most `driver_env::UPCALL_MAX_ARGS` (3)
//!   arguments of type `u8`, `u16`, `u32`, `u64`, `bool`, `i32`, `i64` or `usize`,
//!   is generic over nothing but its environment, and returns `()` or
//!   `Result<(), E>` (upcalls are asynchronous: nothing comes back); all routines
//!   returning a `Result` share one error type;
//! * neither marker goes with `#[cfg]` (the generated tables would not follow).
//!
//! Generated code names the environment crate as `::driver_env` (override with
//! `driver_env = path`); the driver type must implement `Debug` and `Clone` (the
//! twin derives both). See `docs/twin-drivers.md` for the whole picture.

use proc_macro::TokenStream;

mod args;
mod expand;
mod routine;

/// Derives the twin of a driver from an annotated inherent `impl` block; see the
/// [crate documentation](crate).
///
/// Arguments: `twin = Name` (the entry-table newtype), `upcall = Name` (the upcall
/// enum), optionally `dispatch_error = Name` (the dispatcher's error enum, default
/// `UpcallDispatchError`) and `driver_env = path` (default `::driver_env`).
#[proc_macro_attribute]
pub fn twin_driver(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
