//! Analysis of the marked methods: markers, slow-path routines, fast-path entries.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ImplItemFn, Pat, PathArguments,
    ReturnType, Type,
};

/// Most arguments an upcall carries (`driver_env::UPCALL_MAX_ARGS`).
pub(crate) const MAX_ARGS: usize = 3;

/// Collects errors so that one expansion reports every misuse at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    pub(crate) fn take(self) -> Option<syn::Error> {
        self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// Which marker a method carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Fast,
    Slow,
}

/// Removes the helper attributes from `attrs` and says which one was there.
pub(crate) fn take_marker(attrs: &mut Vec<Attribute>, errs: &mut Errors) -> Option<Marker> {
    let mut found: Option<(Marker, Span)> = None;
    attrs.retain(|a| {
        let m = if a.path().is_ident("fast_path") {
            Marker::Fast
        } else if a.path().is_ident("slow_path") {
            Marker::Slow
        } else {
            return true;
        };
        if !matches!(a.meta, syn::Meta::Path(_)) {
            errs.spanned(a, "`#[fast_path]` and `#[slow_path]` take no arguments");
        }
        match found {
            Some((prev, _)) if prev == m => errs.spanned(a, "duplicate marker"),
            Some(_) => errs.spanned(
                a,
                "a method is either `#[fast_path]` (a twin entry point) or `#[slow_path]` \
                 (runs in the driver domain), not both",
            ),
            None => found = Some((m, a.span())),
        }
        false
    });
    let (m, _) = found?;
    for a in attrs.iter() {
        if a.path().is_ident("cfg") || a.path().is_ident("cfg_attr") {
            errs.spanned(
                a,
                "`#[cfg]` on a marked method is not supported: the generated twin and upcall \
                 tables would not follow it",
            );
        }
    }
    Some(m)
}

/// The argument types an upcall can carry (each widened to `u64`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgTy {
    U8,
    U16,
    U32,
    U64,
    Bool,
    I32,
    I64,
    Usize,
}

impl ArgTy {
    fn parse(ty: &Type) -> Option<Self> {
        let Type::Path(p) = ty else { return None };
        if p.qself.is_some() {
            return None;
        }
        let id = p.path.get_ident()?;
        Some(match id.to_string().as_str() {
            "u8" => ArgTy::U8,
            "u16" => ArgTy::U16,
            "u32" => ArgTy::U32,
            "u64" => ArgTy::U64,
            "bool" => ArgTy::Bool,
            "i32" => ArgTy::I32,
            "i64" => ArgTy::I64,
            "usize" => ArgTy::Usize,
            _ => return None,
        })
    }

    fn ty(self) -> TokenStream {
        match self {
            ArgTy::U8 => quote!(u8),
            ArgTy::U16 => quote!(u16),
            ArgTy::U32 => quote!(u32),
            ArgTy::U64 => quote!(u64),
            ArgTy::Bool => quote!(bool),
            ArgTy::I32 => quote!(i32),
            ArgTy::I64 => quote!(i64),
            ArgTy::Usize => quote!(usize),
        }
    }

    /// `v` widened to `u64` (signed values two's complement, sign-extended).
    pub(crate) fn encode(self, v: &Ident) -> TokenStream {
        match self {
            ArgTy::U8 | ArgTy::U16 | ArgTy::U32 | ArgTy::U64 | ArgTy::Bool => {
                quote!(::core::primitive::u64::from(#v))
            }
            ArgTy::Usize | ArgTy::I64 => quote!(#v as ::core::primitive::u64),
            ArgTy::I32 => quote!(::core::primitive::i64::from(#v) as ::core::primitive::u64),
        }
    }

    /// An expression that narrows `raw` (a `u64`) to the type, or returns
    /// `Err(bad)` from the enclosing function.
    pub(crate) fn decode(self, raw: &TokenStream, bad: &TokenStream) -> TokenStream {
        let ty = self.ty();
        match self {
            ArgTy::U64 => quote!(#raw),
            ArgTy::I64 => quote!(#raw as ::core::primitive::i64),
            ArgTy::U8 | ArgTy::U16 | ArgTy::U32 | ArgTy::Usize => quote! {
                match <#ty as ::core::convert::TryFrom<::core::primitive::u64>>::try_from(#raw) {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(_) => return ::core::result::Result::Err(#bad),
                }
            },
            ArgTy::I32 => quote! {
                match <::core::primitive::i32 as ::core::convert::TryFrom<::core::primitive::i64>>::try_from(
                    #raw as ::core::primitive::i64,
                ) {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(_) => return ::core::result::Result::Err(#bad),
                }
            },
            ArgTy::Bool => quote! {
                match #raw {
                    0 => false,
                    1 => true,
                    _ => return ::core::result::Result::Err(#bad),
                }
            },
        }
    }
}

/// What a slow-path routine returns.
pub(crate) enum Ret {
    /// `()`.
    Unit,
    /// `Result<(), E>`, with `E`.
    Result(Box<Type>),
}

/// One upcall argument.
pub(crate) struct Arg {
    pub name: Ident,
    pub ty: ArgTy,
    /// The type as written (for spans).
    pub written: Type,
}

/// A validated slow-path routine.
pub(crate) struct SlowPath {
    pub name: Ident,
    pub variant: Ident,
    pub in_domain: Ident,
    pub env: Ident,
    pub args: Vec<Arg>,
    pub ret: Ret,
}

/// `device_error` -> `DeviceError`.
pub(crate) fn camel(name: &Ident) -> Ident {
    let s = name.to_string();
    let s = s.strip_prefix("r#").unwrap_or(&s);
    let mut out = String::new();
    for part in s.split('_').filter(|p| !p.is_empty()) {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            out.extend(first.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'R');
    }
    Ident::new(&out, name.span())
}

fn check_qualifiers(f: &ImplItemFn, what: &str, errs: &mut Errors) {
    let s = &f.sig;
    if let Some(t) = &s.asyncness {
        errs.spanned(t, format!("a {what} cannot be `async`"));
    }
    if let Some(t) = &s.unsafety {
        errs.spanned(t, format!("a {what} cannot be `unsafe`"));
    }
    if let Some(abi) = &s.abi {
        errs.spanned(abi, format!("a {what} cannot have an explicit ABI"));
    }
    if let Some(v) = &s.variadic {
        errs.spanned(v, format!("a {what} cannot be variadic"));
    }
}

fn simple_ident(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(p) if p.subpat.is_none() && p.by_ref.is_none() => Some(&p.ident),
        _ => None,
    }
}

/// Validates a `#[slow_path]` routine (errors go to `errs`; `None` if any).
pub(crate) fn analyse_slow(f: &ImplItemFn, errs: &mut Errors) -> Option<SlowPath> {
    let mut local = Errors::default();
    check_qualifiers(f, "slow-path routine", &mut local);
    if let Some(c) = &f.sig.constness {
        local.spanned(c, "a slow-path routine cannot be `const`");
    }
    let sig = &f.sig;
    let mut inputs = sig.inputs.iter().peekable();
    if let Some(FnArg::Receiver(_)) = inputs.peek() {
        inputs.next();
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) => local.spanned(
            r,
            "a slow-path routine takes `&self` or `&mut self` (it runs on the driver \
             domain's instance)",
        ),
        _ => local.spanned(
            &sig.ident,
            "a slow-path routine is a method: it takes `&self` or `&mut self`, then the \
             environment",
        ),
    }
    let env_msg = "the first parameter after the receiver of a slow-path routine is the \
                   environment, `env: &E` with `E: DriverEnv`";
    let mut env_ty_ident = None;
    let env = match inputs.next() {
        Some(FnArg::Typed(pt)) => {
            let name = simple_ident(&pt.pat).cloned();
            match &*pt.ty {
                Type::Reference(r) if r.mutability.is_none() => {
                    if let Type::Path(p) = &*r.elem {
                        env_ty_ident = p.path.get_ident().cloned();
                    }
                }
                _ => local.spanned(&pt.ty, env_msg),
            }
            if name.is_none() {
                local.spanned(&pt.pat, "name the environment parameter (e.g. `env`)");
            }
            name
        }
        _ => {
            local.spanned(&sig.ident, env_msg);
            None
        }
    };
    let mut args = Vec::new();
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        let Some(name) = simple_ident(&pt.pat) else {
            local.spanned(
                &pt.pat,
                "a slow-path argument must be a plain name (it becomes a field of the upcall)",
            );
            continue;
        };
        if i == MAX_ARGS {
            local.spanned(
                pt,
                format!(
                    "a slow-path routine takes at most {MAX_ARGS} arguments after the \
                     environment (driver_env::UPCALL_MAX_ARGS)"
                ),
            );
        }
        match ArgTy::parse(&pt.ty) {
            Some(ty) => args.push(Arg {
                name: name.clone(),
                ty,
                written: (*pt.ty).clone(),
            }),
            None => local.spanned(
                &pt.ty,
                "a slow-path argument has type u8, u16, u32, u64, bool, i32, i64 or usize \
                 (it travels in a u64 word of an upcall message)",
            ),
        }
    }
    // Without a valid environment parameter, this check would only repeat that error.
    let env_ok = env_ty_ident.is_some();
    for p in sig.generics.params.iter().filter(|_| env_ok) {
        match p {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(t) if env_ty_ident.as_ref() == Some(&t.ident) => {}
            GenericParam::Type(t) => local.spanned(
                t,
                "a slow-path routine is generic over its environment only (the driver \
                 domain's dispatcher calls it with nothing else to infer from)",
            ),
            GenericParam::Const(c) => local.spanned(
                c,
                "a slow-path routine is generic over its environment only",
            ),
        }
    }
    let ret = match &sig.output {
        ReturnType::Default => Some(Ret::Unit),
        ReturnType::Type(_, ty) => return_kind(ty),
    };
    if ret.is_none() {
        local.spanned(
            &sig.output,
            "a slow-path routine returns `()` or `Result<(), E>`: a twin posts it to the \
             driver domain and goes on, so no value can come back",
        );
    }
    let failed = !local.is_empty();
    if let Some(e) = local.take() {
        errs.push(e);
    }
    if failed {
        return None;
    }
    Some(SlowPath {
        variant: camel(&sig.ident),
        in_domain: format_ident!("{}_in_domain", sig.ident),
        name: sig.ident.clone(),
        env: env?,
        args,
        ret: ret?,
    })
}

fn return_kind(ty: &Type) -> Option<Ret> {
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => Some(Ret::Unit),
        Type::Paren(p) => return_kind(&p.elem),
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            if last.ident != "Result" {
                return None;
            }
            let PathArguments::AngleBracketed(a) = &last.arguments else {
                return None;
            };
            let mut it = a.args.iter();
            match (it.next(), it.next(), it.next()) {
                (
                    Some(GenericArgument::Type(Type::Tuple(ok))),
                    Some(GenericArgument::Type(err)),
                    None,
                ) if ok.elems.is_empty() => Some(Ret::Result(Box::new(err.clone()))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Replaces `Self` in `tokens` by `with` (a signature copied out of the driver's impl
/// into the twin's, where `Self` means the twin).
pub(crate) fn replace_self(tokens: TokenStream, with: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|tt| -> Vec<TokenTree> {
            match tt {
                TokenTree::Ident(i) if i == "Self" => with.clone().into_iter().collect(),
                TokenTree::Group(g) => {
                    let mut n =
                        proc_macro2::Group::new(g.delimiter(), replace_self(g.stream(), with));
                    n.set_span(g.span());
                    vec![TokenTree::Group(n)]
                }
                other => vec![other],
            }
        })
        .collect()
}

/// Generates the twin's delegating method for a `#[fast_path]` method (validated
/// here; errors go to `errs`).
pub(crate) fn fast_delegate(
    f: &ImplItemFn,
    driver: &TokenStream,
    errs: &mut Errors,
) -> Option<TokenStream> {
    let mut local = Errors::default();
    check_qualifiers(f, "fast-path entry point", &mut local);
    let sig = &f.sig;
    let receiver = match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.colon_token.is_none() => {
            let and = r.reference.as_ref().map(|(and, lt)| quote!(#and #lt));
            let m = r.reference.as_ref().and(r.mutability);
            let s = r.self_token;
            Some(quote!(#and #m #s))
        }
        Some(FnArg::Receiver(r)) => {
            local.spanned(
                r,
                "a fast-path entry point takes `self`, `&self` or `&mut self` (no typed \
                 receiver)",
            );
            None
        }
        _ => {
            local.spanned(
                &sig.ident,
                "`#[fast_path]` marks a method the twin calls on its driver instance: it \
                 needs a receiver (`&self` or `&mut self`); leave associated functions \
                 such as constructors unmarked",
            );
            None
        }
    };
    let failed = !local.is_empty();
    if let Some(e) = local.take() {
        errs.push(e);
    }
    let receiver = receiver?;
    if failed {
        return None;
    }
    let mut params = Vec::new();
    let mut forward = Vec::new();
    for (i, input) in sig.inputs.iter().skip(1).enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        let name = simple_ident(&pt.pat)
            .cloned()
            .unwrap_or_else(|| format_ident!("arg{}", i, span = pt.pat.span()));
        let ty = replace_self(pt.ty.to_token_stream(), driver);
        params.push(quote!(#name: #ty));
        forward.push(name);
    }
    let ident = &sig.ident;
    let vis = &f.vis;
    let constness = &sig.constness;
    let generics = replace_self(sig.generics.to_token_stream(), driver);
    let where_clause = replace_self(sig.generics.where_clause.to_token_stream(), driver);
    let output = replace_self(sig.output.to_token_stream(), driver);
    let explicit: Vec<TokenStream> = sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            GenericParam::Type(t) => Some(t.ident.to_token_stream()),
            GenericParam::Const(c) => Some(c.ident.to_token_stream()),
            GenericParam::Lifetime(_) => None,
        })
        .collect();
    let turbofish = if explicit.is_empty() {
        quote!()
    } else {
        quote!(::<#(#explicit),*>)
    };
    let attrs = &f.attrs;
    let inline = if attrs.iter().any(|a| a.path().is_ident("inline")) {
        quote!()
    } else {
        quote!(#[inline])
    };
    let note = format!(" Twin entry point: calls `{driver}::{ident}` on the driver instance.");
    let note = note.replace(" :: ", "::");
    Some(quote_spanned! {sig.span()=>
        #(#attrs)*
        ///
        #[doc = #note]
        #inline
        #vis #constness fn #ident #generics (#receiver, #(#params),*) #output #where_clause {
            self.0.#ident #turbofish (#(#forward),*)
        }
    })
}
