//! Misuse is reported as `compile_error!` at the offending tokens; the block comes
//! back with its markers stripped so the errors do not cascade.

use proc_macro2::TokenStream;
use quote::quote;

use super::expand;

fn args() -> TokenStream {
    quote!(twin = DTwin, upcall = DUpcall)
}

/// Expands and returns the error messages (empty on success).
fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
    let out = expand(attr, item).to_string();
    assert!(
        !out.contains("# [fast_path") && !out.contains("# [slow_path"),
        "markers must be stripped: {out}"
    );
    out.split("compile_error")
        .skip(1)
        .map(|s| {
            let start = s.find('"').unwrap() + 1;
            let end = start + s[start..].find('"').unwrap();
            s[start..end].to_string()
        })
        .collect()
}

fn expect(attr: TokenStream, item: TokenStream, want: &[&str]) {
    let got = errors(attr, item);
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.contains(w), "{g:?} does not mention {w:?}");
    }
}

#[test]
fn a_good_driver_expands_cleanly() {
    let item = quote! {
        impl D {
            #[fast_path]
            pub fn tx<E: DriverEnv>(&mut self, env: &E, mut f: impl FnMut(u8)) -> Result<bool, X> {
                self.err(env, 1, 2)?;
                Ok(true)
            }
            #[slow_path]
            fn err<E: DriverEnv>(&mut self, env: &E, queue: u16, count: u32) -> Result<(), X> {
                Ok(())
            }
            #[slow_path]
            fn note<E: DriverEnv>(&self, env: &E) {}
            pub fn init() -> Self { D }
        }
    };
    let out = expand(args(), item).to_string();
    assert!(!out.contains("compile_error"), "{out}");
    for want in [
        "pub enum DUpcall",
        "Err { # [doc = \" Argument `queue`.\"] queue : u16 , # [doc = \" Argument `count`.\"] count : u32 }",
        "Note { }",
        "fn err_in_domain",
        "fn note_in_domain",
        "pub fn dispatch_upcall",
        "pub enum UpcallDispatchError < E >",
        "UpcallDispatchError < X >",
        "pub struct DTwin (D)",
        "tx :: < E > (env , f)",
        "TWIN_ENTRY_POINTS : & [& str] = & [\"tx\"]",
        "SLOW_PATH_ROUTINES : & [& str] = & [\"err\" , \"note\"]",
        ":: driver_env :: UpcallRoute :: Local => self . err_in_domain (env , queue , count)",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }
    // Unmarked methods stay; no delegate for them or for slow paths.
    assert!(out.contains("pub fn init"));
    assert_eq!(out.matches("Twin entry point").count(), 1);
}

#[test]
fn arguments_are_checked() {
    let item = quote!(impl D {});
    expect(quote!(upcall = U), item.clone(), &["needs `twin = Name`"]);
    expect(quote!(twin = T), item.clone(), &["needs `upcall = Name`"]);
    expect(
        quote!(twin = T, upcall = U, colour = Red),
        item.clone(),
        &["unknown twin_driver argument"],
    );
    expect(
        quote!(twin = T, twin = T2, upcall = U),
        item.clone(),
        &["duplicate twin_driver argument"],
    );
    let out = expand(
        quote!(
            twin = T,
            upcall = U,
            dispatch_error = DErr,
            driver_env = my::env
        ),
        item,
    )
    .to_string();
    assert!(out.contains("pub enum DErr < E >"), "{out}");
    assert!(out.contains("my :: env :: UpcallMsg"), "{out}");
}

#[test]
fn the_block_must_be_an_inherent_impl_of_a_plain_type() {
    expect(args(), quote!(impl Tr for D {}), &["not on a trait impl"]);
    expect(
        args(),
        quote!(
            impl<T> D<T> {}
        ),
        &["does not support generic driver types"],
    );
    expect(
        args(),
        quote!(
            struct D;
        ),
        &["goes on the driver's inherent `impl` block"],
    );
}

#[test]
fn fast_path_misuse() {
    expect(
        args(),
        quote!(impl D {
            #[fast_path]
            pub fn attach<E: DriverEnv>(env: &E) -> Self { D }
        }),
        &["needs a receiver"],
    );
    expect(
        args(),
        quote!(impl D {
            #[fast_path]
            pub async fn go(&self) {}
            #[fast_path]
            pub unsafe fn go2(&self) {}
            #[fast_path]
            pub fn go3(self: Box<Self>) {}
        }),
        &[
            "cannot be `async`",
            "cannot be `unsafe`",
            "no typed receiver",
        ],
    );
    expect(
        args(),
        quote!(impl D {
            #[fast_path(hot)]
            pub fn go(&self) {}
            #[fast_path]
            #[slow_path]
            pub fn both(&self) {}
            #[fast_path]
            #[fast_path]
            pub fn twice(&self) {}
            #[cfg(test)]
            #[fast_path]
            pub fn gated(&self) {}
            #[fast_path]
            const C: u8 = 1;
        }),
        &[
            "take no arguments",
            "not both",
            "duplicate marker",
            "`#[cfg]` on a marked method",
            "mark methods only",
        ],
    );
}

#[test]
fn slow_path_signatures() {
    expect(
        args(),
        quote!(impl D {
            #[slow_path]
            fn a<E: DriverEnv>(&mut self, env: &E, s: String) {}
            #[slow_path]
            fn b<E: DriverEnv>(&mut self, env: &E, a: u8, b: u8, c: u8, d: u8) {}
            #[slow_path]
            fn c<E: DriverEnv>(&mut self, env: &E) -> u32 { 0 }
            #[slow_path]
            fn d<E: DriverEnv>(&mut self, env: &E) -> Result<u32, X> { Ok(0) }
            #[slow_path]
            fn e(&mut self, queue: u16) {}
            #[slow_path]
            fn f<E: DriverEnv>(self, env: &E) {}
            #[slow_path]
            fn g<E: DriverEnv, T>(&self, env: &E) {}
            #[slow_path]
            fn h<E: DriverEnv>(&self, env: &E, (a, b): (u8, u8)) {}
            #[slow_path]
            fn i<E: DriverEnv>(&self, env: &mut E) {}
            #[slow_path]
            fn j<E: DriverEnv>(env: &E) {}
        }),
        &[
            "has type u8, u16, u32, u64, bool, i32, i64 or usize",
            "at most 3 arguments",
            "returns `()` or `Result<(), E>`",
            "returns `()` or `Result<(), E>`",
            "is the environment",
            "takes `&self` or `&mut self`",
            "generic over its environment only",
            "must be a plain name",
            "is the environment",
            "is a method",
        ],
    );
}

#[test]
fn slow_path_error_types_must_agree_and_names_must_be_free() {
    expect(
        args(),
        quote!(impl D {
            #[slow_path]
            fn a<E: DriverEnv>(&mut self, env: &E) -> Result<(), X> { Ok(()) }
            #[slow_path]
            fn b<E: DriverEnv>(&mut self, env: &E) -> Result<(), Y> { Ok(()) }
        }),
        &["share one error type (the first one uses `X`)"],
    );
    expect(
        args(),
        quote!(impl D {
            #[slow_path]
            fn a<E: DriverEnv>(&mut self, env: &E) {}
            fn a_in_domain(&self) {}
        }),
        &["already defines"],
    );
}
