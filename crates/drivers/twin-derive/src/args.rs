//! The arguments of `#[twin_driver(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{Ident, Path};

/// Parsed arguments.
pub(crate) struct Args {
    /// Name of the twin entry-table newtype.
    pub twin: Ident,
    /// Name of the upcall enum.
    pub upcall: Ident,
    /// Name of the dispatcher's error enum.
    pub dispatch_error: Ident,
    /// Path of the driver-env crate.
    pub env: Path,
}

fn set<T>(slot: &mut Option<T>, meta: &syn::meta::ParseNestedMeta<'_>, v: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error("duplicate twin_driver argument"));
    }
    *slot = Some(v);
    Ok(())
}

impl Args {
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let mut twin = None;
        let mut upcall = None;
        let mut dispatch_error = None;
        let mut env = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("twin") {
                let v: Ident = meta.value()?.parse()?;
                set(&mut twin, &meta, v)
            } else if meta.path.is_ident("upcall") {
                let v: Ident = meta.value()?.parse()?;
                set(&mut upcall, &meta, v)
            } else if meta.path.is_ident("dispatch_error") {
                let v: Ident = meta.value()?.parse()?;
                set(&mut dispatch_error, &meta, v)
            } else if meta.path.is_ident("driver_env") {
                let v: Path = meta.value()?.parse()?;
                set(&mut env, &meta, v)
            } else {
                Err(meta.error(
                    "unknown twin_driver argument: expected `twin = Name`, `upcall = Name`, \
                     `dispatch_error = Name` or `driver_env = path`",
                ))
            }
        });
        parser.parse2(attr)?;
        let missing = |what: &str| {
            syn::Error::new(
                Span::call_site(),
                format!("twin_driver needs `{what} = Name`, e.g. #[twin_driver(twin = MyDriverTwin, upcall = MyDriverUpcall)]"),
            )
        };
        Ok(Self {
            twin: twin.ok_or_else(|| missing("twin"))?,
            upcall: upcall.ok_or_else(|| missing("upcall"))?,
            dispatch_error: dispatch_error
                .unwrap_or_else(|| Ident::new("UpcallDispatchError", Span::call_site())),
            env: env.unwrap_or_else(|| syn::parse_quote!(::driver_env)),
        })
    }
}
