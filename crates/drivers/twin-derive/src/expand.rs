//! The expansion of `#[twin_driver]`.

use std::collections::HashSet;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, Pat, Type, Visibility};

use crate::args::Args;
use crate::routine::{analyse_slow, fast_delegate, take_marker, Errors, Marker, Ret, SlowPath};

/// Expands the attribute; on misuse, `compile_error!`s plus the block with its
/// markers stripped (so the errors do not cascade).
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errs = Errors::default();
    let args = match Args::parse(attr) {
        Ok(a) => Some(a),
        Err(e) => {
            errs.push(e);
            None
        }
    };
    let mut imp: ItemImpl = match syn::parse2(item.clone()) {
        Ok(i) => i,
        Err(_) => {
            errs.spanned(
                &item,
                "#[twin_driver] goes on the driver's inherent `impl` block",
            );
            let e = errs.take().map(|e| e.to_compile_error());
            return quote!(#e #item);
        }
    };
    if let Some((_, path, _)) = &imp.trait_ {
        errs.spanned(
            path,
            "#[twin_driver] goes on the driver's inherent `impl` block, not on a trait impl",
        );
    }
    if !imp.generics.params.is_empty() {
        errs.spanned(
            &imp.generics,
            "#[twin_driver] does not support generic driver types",
        );
    }
    if let Some(u) = &imp.unsafety {
        errs.spanned(u, "#[twin_driver] does not support `unsafe impl`");
    }
    let driver = imp.self_ty.to_token_stream();
    let names: HashSet<String> = imp
        .items
        .iter()
        .filter_map(|i| match i {
            ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
            _ => None,
        })
        .collect();

    let mut items = Vec::with_capacity(imp.items.len());
    let mut delegates = Vec::new();
    let mut entry_points = Vec::new();
    let mut slow = Vec::new();
    for item in std::mem::take(&mut imp.items) {
        match item {
            ImplItem::Fn(mut f) => match take_marker(&mut f.attrs, &mut errs) {
                None => items.push(ImplItem::Fn(f)),
                Some(Marker::Fast) => {
                    if let Some(d) = fast_delegate(&f, &driver, &mut errs) {
                        delegates.push(d);
                        entry_points.push(f.sig.ident.to_string());
                    }
                    items.push(ImplItem::Fn(f));
                }
                Some(Marker::Slow) => match analyse_slow(&f, &mut errs) {
                    Some(sp) if names.contains(&sp.in_domain.to_string()) => {
                        errs.spanned(
                            &f.sig.ident,
                            format!(
                                "the slow-path routine's body moves to a generated method \
                                 `{}`, which this impl block already defines",
                                sp.in_domain
                            ),
                        );
                        items.push(ImplItem::Fn(f));
                    }
                    Some(sp) => {
                        if let Some(a) = &args {
                            let (stub, body) = split_slow(f, &sp, a);
                            items.push(ImplItem::Fn(stub));
                            items.push(ImplItem::Fn(body));
                        }
                        slow.push(sp);
                    }
                    None => items.push(ImplItem::Fn(f)),
                },
            },
            mut other => {
                let attrs = match &mut other {
                    ImplItem::Const(c) => Some(&mut c.attrs),
                    ImplItem::Type(t) => Some(&mut t.attrs),
                    ImplItem::Macro(m) => Some(&mut m.attrs),
                    _ => None,
                };
                if let Some(attrs) = attrs {
                    let mut ignored = Errors::default();
                    if take_marker(attrs, &mut ignored).is_some() {
                        errs.spanned(
                            &other,
                            "`#[fast_path]` and `#[slow_path]` mark methods only",
                        );
                    }
                }
                items.push(other);
            }
        }
    }
    imp.items = items;

    let err_ty = error_type(&slow, &mut errs);
    let (Some(args), Some(err_ty)) = (args, err_ty) else {
        let e = errs.take().map(|e| e.to_compile_error());
        return quote!(#e #imp);
    };
    if let Some(e) = errs.take() {
        let e = e.to_compile_error();
        return quote!(#e #imp);
    }

    let upcall = upcall_enum(&args, &driver, &slow);
    let dispatch = dispatcher(&args, &driver, &slow, &err_ty, &entry_points);
    let twin = twin(&args, &driver, &delegates);
    quote! {
        #imp
        #upcall
        #dispatch
        #twin
    }
}

/// The dispatcher's error type: the routines' common `Result` error, or
/// `Infallible` when none returns a `Result`.
fn error_type(slow: &[SlowPath], errs: &mut Errors) -> Option<TokenStream> {
    let mut found: Option<&Type> = None;
    let mut ok = true;
    for s in slow {
        if let Ret::Result(e) = &s.ret {
            match found {
                None => found = Some(e),
                Some(f) if f.to_token_stream().to_string() == e.to_token_stream().to_string() => {}
                Some(f) => {
                    ok = false;
                    errs.spanned(
                        e,
                        format!(
                            "all slow-path routines returning a Result must share one error \
                             type (the first one uses `{}`)",
                            f.to_token_stream()
                        ),
                    );
                }
            }
        }
    }
    ok.then(|| match found {
        Some(t) => t.to_token_stream(),
        None => quote!(::core::convert::Infallible),
    })
}

/// Turns a slow-path routine into its stub (same name and signature) and the
/// private `<name>_in_domain` holding the original body.
fn split_slow(f: ImplItemFn, sp: &SlowPath, args: &Args) -> (ImplItemFn, ImplItemFn) {
    let env_path = &args.env;
    let upcall = &args.upcall;
    let mut body = f.clone();
    body.sig.ident = sp.in_domain.clone();
    body.vis = Visibility::Inherited;
    let body_doc = format!(
        " The body of the slow-path routine `{}`: runs in the driver domain (moved here \
         by twin-derive; call `{}` or the dispatcher instead).",
        sp.name, sp.name
    );
    body.attrs.push(syn::parse_quote!(#[doc = ""]));
    body.attrs.push(syn::parse_quote!(#[doc = #body_doc]));

    let mut stub = f;
    for input in stub.sig.inputs.iter_mut() {
        if let FnArg::Typed(pt) = input {
            if let Pat::Ident(pi) = &mut *pt.pat {
                pi.mutability = None;
            }
        }
    }
    let env = &sp.env;
    let in_domain = &sp.in_domain;
    let variant = &sp.variant;
    let fields: Vec<_> = sp.args.iter().map(|a| &a.name).collect();
    let success = match sp.ret {
        Ret::Unit => quote!(()),
        Ret::Result(_) => quote!(::core::result::Result::Ok(())),
    };
    let span = stub.sig.ident.span();
    stub.block = syn::parse_quote_spanned! {span=> {
        match #env_path::Upcalls::upcall(#env, #upcall::#variant { #(#fields),* }.encode()) {
            #env_path::UpcallRoute::Local => self.#in_domain(#env, #(#fields),*),
            #env_path::UpcallRoute::Posted | #env_path::UpcallRoute::Dropped => #success,
        }
    }};
    let stub_doc = format!(
        " Slow path (generated stub): in the driver domain the routine runs in place; \
         in a twin it is posted to the driver domain as [`{upcall}::{variant}`] and this \
         returns success at once."
    );
    stub.attrs.push(syn::parse_quote!(#[doc = ""]));
    stub.attrs.push(syn::parse_quote!(#[doc = #stub_doc]));
    (stub, body)
}

fn upcall_enum(args: &Args, driver: &TokenStream, slow: &[SlowPath]) -> TokenStream {
    let Args {
        upcall, env: envp, ..
    } = args;
    let driver_s = pretty(driver);
    let ops: Vec<u32> = (1..).take(slow.len()).collect();
    let variants = slow.iter().zip(&ops).map(|(s, op)| {
        let doc = format!(
            " Upcall of the slow-path routine `{driver_s}::{}` (operation {op}).",
            s.name
        );
        let fields = s.args.iter().map(|a| {
            let fdoc = format!(" Argument `{}`.", a.name);
            let n = &a.name;
            let t = &a.written;
            quote_spanned!(t.span()=> #[doc = #fdoc] #n: #t)
        });
        let v = &s.variant;
        quote!(#[doc = #doc] #v { #(#fields),* })
    });
    let names: Vec<String> = slow.iter().map(|s| s.name.to_string()).collect();
    let vs: Vec<_> = slow.iter().map(|s| &s.variant).collect();
    let encode_arms = slow.iter().zip(&ops).map(|(s, op)| {
        let v = &s.variant;
        let fields: Vec<_> = s.args.iter().map(|a| &a.name).collect();
        if fields.is_empty() {
            return quote! {
                Self::#v {} => #envp::UpcallMsg { op: #op, args: [0; #envp::UPCALL_MAX_ARGS] },
            };
        }
        let sets = s.args.iter().enumerate().map(|(i, a)| {
            let e = a.ty.encode(&a.name);
            quote!(args[#i] = #e;)
        });
        quote! {
            Self::#v { #(#fields),* } => {
                let mut args = [0u64; #envp::UPCALL_MAX_ARGS];
                #(#sets)*
                #envp::UpcallMsg { op: #op, args }
            }
        }
    });
    let used_arms = slow.iter().zip(&ops).map(|(s, op)| {
        let n = s.args.len();
        quote!(#op => #n,)
    });
    let decode_arms = slow.iter().zip(&ops).map(|(s, op)| {
        let v = &s.variant;
        let fields = s.args.iter().enumerate().map(|(i, a)| {
            let raw = quote!(msg.args[#i]);
            let bad = quote!(#envp::UpcallError::BadArg { op, index: #i, value: msg.args[#i] });
            let n = &a.name;
            let d = a.ty.decode(&raw, &bad);
            quote!(#n: #d)
        });
        quote!(#op => Self::#v { #(#fields),* },)
    });
    let decode_body = if slow.is_empty() {
        quote!(::core::result::Result::Err(#envp::UpcallError::UnknownOp(msg.op)))
    } else {
        quote! {
            let op = msg.op;
            let used: usize = match op {
                #(#used_arms)*
                _ => return ::core::result::Result::Err(#envp::UpcallError::UnknownOp(op)),
            };
            if let ::core::option::Option::Some((index, &value)) =
                msg.args.iter().enumerate().skip(used).find(|(_, v)| **v != 0)
            {
                return ::core::result::Result::Err(#envp::UpcallError::BadArg { op, index, value });
            }
            ::core::result::Result::Ok(match op {
                #(#decode_arms)*
                _ => return ::core::result::Result::Err(#envp::UpcallError::UnknownOp(op)),
            })
        }
    };
    let enum_doc = format!(
        " The upcalls of `{driver_s}`: one variant per slow-path routine, its fields the \
         routine's arguments (generated by twin-derive). A twin posts them to the driver \
         domain, whose dispatcher (`{driver_s}::dispatch_upcall`) runs the routine."
    );
    quote! {
        #[doc = #enum_doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum #upcall {
            #(#variants),*
        }

        impl #upcall {
            /// Every routine as (operation code, name), in declaration order.
            pub const ROUTINES: &[(u32, &str)] = &[#((#ops, #names)),*];

            /// The operation code: 1-based, in declaration order.
            pub const fn op(&self) -> u32 {
                match *self {
                    #(Self::#vs { .. } => #ops,)*
                }
            }

            /// The routine's name.
            pub const fn name(&self) -> &'static str {
                match *self {
                    #(Self::#vs { .. } => #names,)*
                }
            }

            /// The message a twin posts: the operation code and each argument widened
            /// to `u64` (signed ones sign-extended); unused arguments are 0.
            pub fn encode(&self) -> #envp::UpcallMsg {
                match *self {
                    #(#encode_arms)*
                }
            }

            /// Decodes and validates a message: an unknown operation is
            /// `UnknownOp`; an argument that does not fit its type (a `bool` other
            /// than 0 or 1) or an unused argument other than 0 is `BadArg`.
            pub fn decode(msg: &#envp::UpcallMsg) -> ::core::result::Result<Self, #envp::UpcallError> {
                #decode_body
            }
        }
    }
}

fn dispatcher(
    args: &Args,
    driver: &TokenStream,
    slow: &[SlowPath],
    err_ty: &TokenStream,
    entry_points: &[String],
) -> TokenStream {
    let Args {
        upcall,
        dispatch_error: derr,
        env: envp,
        twin,
    } = args;
    let arms = slow.iter().map(|s| {
        let v = &s.variant;
        let f = &s.in_domain;
        let name = s.name.to_string();
        let fields: Vec<_> = s.args.iter().map(|a| &a.name).collect();
        let binds: Vec<_> = s
            .args
            .iter()
            .map(|a| quote::format_ident!("arg_{}", a.name))
            .collect();
        let call = quote!(self.#f(env, #(#binds),*));
        let run = match s.ret {
            Ret::Unit => quote!(#call;),
            Ret::Result(_) => quote! {
                if let ::core::result::Result::Err(error) = #call {
                    return ::core::result::Result::Err(#derr::Routine { routine: #name, error });
                }
            },
        };
        quote! {
            #upcall::#v { #(#fields: #binds),* } => { #run }
        }
    });
    let body = if slow.is_empty() {
        quote! {
            let _ = env;
            match #upcall::decode(msg) {
                ::core::result::Result::Ok(call) => match call {},
                ::core::result::Result::Err(e) => ::core::result::Result::Err(#derr::Decode(e)),
            }
        }
    } else {
        quote! {
            let call = #upcall::decode(msg).map_err(#derr::Decode)?;
            match call {
                #(#arms)*
            }
            ::core::result::Result::Ok(call)
        }
    };
    let names: Vec<String> = slow.iter().map(|s| s.name.to_string()).collect();
    let driver_s = pretty(driver);
    let entry_doc = format!(
        " The fast-path entry points: the methods of the twin entry table `{twin}` \
         (generated by twin-derive)."
    );
    let slow_doc = format!(
        " The slow-path routines in operation-code order: the variants of `{upcall}` \
         (generated by twin-derive)."
    );
    let derr_doc = format!(
        " Why the driver domain could not carry out an upcall of `{driver_s}` (generated \
         by twin-derive)."
    );
    quote! {
        #[doc = #derr_doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum #derr<E> {
            /// The message does not decode (unknown routine or invalid argument).
            Decode(#envp::UpcallError),
            /// The routine ran and failed.
            Routine {
                /// The routine's name.
                routine: &'static str,
                /// Its error.
                error: E,
            },
        }

        impl<E> ::core::fmt::Display for #derr<E> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self {
                    Self::Decode(_) => f.write_str("invalid upcall"),
                    Self::Routine { routine, .. } => {
                        ::core::write!(f, "slow-path routine {routine} failed")
                    }
                }
            }
        }

        impl<E: ::std::error::Error + 'static> ::std::error::Error for #derr<E> {
            fn source(&self) -> ::core::option::Option<&(dyn ::std::error::Error + 'static)> {
                match self {
                    Self::Decode(e) => ::core::option::Option::Some(e),
                    Self::Routine { error, .. } => ::core::option::Option::Some(error),
                }
            }
        }

        impl #driver {
            #[doc = #entry_doc]
            pub const TWIN_ENTRY_POINTS: &[&str] = &[#(#entry_points),*];

            #[doc = #slow_doc]
            pub const SLOW_PATH_ROUTINES: &[&str] = &[#(#names),*];

            /// Runs the slow-path routine a twin's upcall names, here and now: the
            /// driver domain calls this for every message a twin posted (it never
            /// routes through `upcall()` again). Returns the decoded call.
            pub fn dispatch_upcall<Env: #envp::DriverEnv>(
                &mut self,
                env: &Env,
                msg: &#envp::UpcallMsg,
            ) -> ::core::result::Result<#upcall, #derr<#err_ty>> {
                #body
            }
        }
    }
}

fn twin(args: &Args, driver: &TokenStream, delegates: &[TokenStream]) -> TokenStream {
    let twin = &args.twin;
    let driver_s = pretty(driver);
    let doc = format!(
        " The twin entry table of `{driver_s}` (generated by twin-derive): holds a driver \
         instance and exposes only its fast-path entry points \
         (`{driver_s}::TWIN_ENTRY_POINTS`). The twin runtime holds this type; slow-path \
         routines reached from these entries go through the environment's upcall."
    );
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone)]
        pub struct #twin(#driver);

        impl #twin {
            /// Wraps a driver instance (for a twin: fresh from `attach` over the
            /// twin's environment).
            #[inline]
            pub fn new(inner: #driver) -> Self {
                Self(inner)
            }

            /// Gives the driver instance back.
            #[inline]
            pub fn into_inner(self) -> #driver {
                self.0
            }

            /// The driver instance, shared.
            #[inline]
            pub fn inner(&self) -> &#driver {
                &self.0
            }

            /// The driver instance, exclusively: for a host that also runs the driver
            /// domain's side of the driver (its upcall dispatcher) on the same instance.
            #[inline]
            pub fn inner_mut(&mut self) -> &mut #driver {
                &mut self.0
            }

            #(#delegates)*
        }
    }
}

/// `crate :: a :: B` -> `crate::a::B` for doc strings.
fn pretty(tokens: &TokenStream) -> String {
    tokens.to_string().replace(" :: ", "::").replace(' ', "")
}

#[cfg(test)]
mod tests;
