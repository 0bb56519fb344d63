//! `#[loopscope::main]`: a drop-in for `#[tokio::main]` that installs loopscope's recorder from the
//! environment. Use it through the `loopscope` crate, which re-exports it.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token};

/// Marks an `async fn` (usually `main`) to run on a tokio runtime with loopscope's recorder
/// installed from the environment (`LOOPSCOPE_RECORD`, `LOOPSCOPE_SERVE`, `LOOPSCOPE_PROFILE`, ...;
/// see `loopscope::Session::from_env`). Without those variables nothing is installed.
///
/// Takes `#[tokio::main]`'s arguments: `flavor = "multi_thread"` (the default) or
/// `"current_thread"`, `worker_threads = N`, `start_paused = true` (current-thread, tokio's
/// `test-util`), `unhandled_panic = "ignore" | "shutdown_runtime"` (tokio_unstable), and
/// `crate = "path"` for where the `loopscope` crate is.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_ts = TokenStream2::from(item);
    match expand(args.into(), item_ts.clone()) {
        Ok(ts) => ts.into(),
        // Keep the function, so that one error does not bury the rest of the program in others.
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#err #item_ts).into()
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    MultiThread,
    CurrentThread,
}

struct Config {
    flavor: Option<(Flavor, Span)>,
    worker_threads: Option<(syn::LitInt, Span)>,
    start_paused: Option<(bool, Span)>,
    unhandled_panic: Option<(String, Span)>,
    krate: Option<syn::Path>,
}

fn lit_str(value: &Expr, key: &str) -> syn::Result<syn::LitStr> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(syn::Error::new(other.span(), format!("`{key}` expects a string literal"))),
    }
}

fn parse_config(args: TokenStream2) -> syn::Result<Config> {
    let mut config =
        Config { flavor: None, worker_threads: None, start_paused: None, unhandled_panic: None, krate: None };
    let pairs = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args)?;
    for pair in pairs {
        let key = pair.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let span = pair.span();
        let duplicate = || Err(syn::Error::new(span, format!("`{key}` given twice")));
        match key.as_str() {
            "flavor" => {
                if config.flavor.is_some() {
                    return duplicate();
                }
                let s = lit_str(&pair.value, "flavor")?;
                let flavor = match s.value().as_str() {
                    "multi_thread" => Flavor::MultiThread,
                    "current_thread" => Flavor::CurrentThread,
                    other => {
                        return Err(syn::Error::new(
                            s.span(),
                            format!("unknown flavor `{other}`: expected \"multi_thread\" or \"current_thread\""),
                        ));
                    }
                };
                config.flavor = Some((flavor, span));
            }
            "worker_threads" => {
                if config.worker_threads.is_some() {
                    return duplicate();
                }
                match &pair.value {
                    Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) if n.base10_parse::<usize>().is_ok_and(|n| n > 0) => {
                        config.worker_threads = Some((n.clone(), span));
                    }
                    other => {
                        return Err(syn::Error::new(other.span(), "`worker_threads` expects a positive integer"));
                    }
                }
            }
            "start_paused" => {
                if config.start_paused.is_some() {
                    return duplicate();
                }
                match &pair.value {
                    Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => config.start_paused = Some((b.value, span)),
                    other => return Err(syn::Error::new(other.span(), "`start_paused` expects true or false")),
                }
            }
            "unhandled_panic" => {
                if config.unhandled_panic.is_some() {
                    return duplicate();
                }
                let s = lit_str(&pair.value, "unhandled_panic")?;
                if !matches!(s.value().as_str(), "ignore" | "shutdown_runtime") {
                    return Err(syn::Error::new(
                        s.span(),
                        "`unhandled_panic` expects \"ignore\" or \"shutdown_runtime\"",
                    ));
                }
                config.unhandled_panic = Some((s.value(), span));
            }
            "crate" => {
                if config.krate.is_some() {
                    return duplicate();
                }
                config.krate = Some(lit_str(&pair.value, "crate")?.parse()?);
            }
            _ => {
                return Err(syn::Error::new(
                    pair.path.span(),
                    "unknown argument: expected `flavor`, `worker_threads`, `start_paused`, `unhandled_panic` or `crate`",
                ));
            }
        }
    }
    let flavor = config.flavor.map_or(Flavor::MultiThread, |(f, _)| f);
    if let (Flavor::CurrentThread, Some((_, span))) = (flavor, &config.worker_threads) {
        return Err(syn::Error::new(*span, "`worker_threads` needs the multi_thread flavor"));
    }
    if let (Flavor::MultiThread, Some((true, span))) = (flavor, &config.start_paused) {
        return Err(syn::Error::new(*span, "`start_paused` needs the current_thread flavor"));
    }
    Ok(config)
}

fn expand(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let config = parse_config(args)?;
    let mut func: ItemFn = syn::parse2(item)?;
    if func.sig.asyncness.take().is_none() {
        return Err(syn::Error::new(func.sig.fn_token.span(), "#[loopscope::main] goes on an `async fn`"));
    }
    if !func.sig.inputs.is_empty() && func.sig.ident == "main" {
        return Err(syn::Error::new(func.sig.inputs.span(), "`main` takes no arguments"));
    }
    let krate = config.krate.clone().unwrap_or_else(|| syn::parse_quote!(::loopscope));
    let rt = quote!(#krate::__private::tokio::runtime);
    let mut setup = match config.flavor.map_or(Flavor::MultiThread, |(f, _)| f) {
        Flavor::MultiThread => quote!(let mut builder = #rt::Builder::new_multi_thread();),
        Flavor::CurrentThread => quote!(let mut builder = #rt::Builder::new_current_thread();),
    };
    if let Some((n, span)) = &config.worker_threads {
        setup.extend(quote_spanned!(*span=> builder.worker_threads(#n);));
    }
    if let Some((paused, span)) = &config.start_paused {
        setup.extend(quote_spanned!(*span=> builder.start_paused(#paused);));
    }
    if let Some((policy, span)) = &config.unhandled_panic {
        let variant = match policy.as_str() {
            "ignore" => quote!(Ignore),
            _ => quote!(ShutdownRuntime),
        };
        setup.extend(quote_spanned!(*span=> builder.unhandled_panic(#rt::UnhandledPanic::#variant);));
    }
    let body = &func.block;
    let output = match &func.sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => quote!(#ty),
    };
    // The body becomes a future whose output is the function's return type, so that `?` and
    // `return` inside it mean what they meant in the `async fn`.
    func.block = syn::parse2(quote! {
        {
            let body = async move #body;
            #setup
            #krate::__private::block_on::<#output, _>(builder, body)
        }
    })?;
    Ok(quote!(#func))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, item: &str) -> Result<String, String> {
        expand(args.parse().unwrap(), item.parse().unwrap()).map(|t| t.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn tokio_mains_arguments_build_the_same_runtime() {
        let out = expand_str("", "async fn main() {}").unwrap();
        assert!(out.contains("new_multi_thread"), "{out}");
        assert!(out.contains(":: loopscope :: __private :: block_on :: < () , _ >"), "{out}");
        let out = expand_str("flavor = \"multi_thread\", worker_threads = 4", "async fn main() {}").unwrap();
        assert!(out.contains("worker_threads (4)"), "{out}");
        let out = expand_str("flavor = \"current_thread\", start_paused = true", "async fn main() {}").unwrap();
        assert!(out.contains("new_current_thread") && out.contains("start_paused (true)"), "{out}");
        let out = expand_str("unhandled_panic = \"shutdown_runtime\"", "async fn main() {}").unwrap();
        assert!(out.contains("UnhandledPanic :: ShutdownRuntime"), "{out}");
        let out = expand_str("crate = \"my::ls\"", "async fn main() -> std::io::Result<()> { Ok(()) }").unwrap();
        assert!(out.contains("my :: ls :: __private :: block_on :: < std :: io :: Result < () > , _ >"), "{out}");
        assert!(!out.contains("async fn"), "the function is no longer async: {out}");
    }

    #[test]
    fn bad_arguments_are_compile_errors_that_say_what_was_expected() {
        let cases = [
            ("flavor = \"threaded\"", "async fn main() {}", "expected \"multi_thread\" or \"current_thread\""),
            ("flavor = 1", "async fn main() {}", "`flavor` expects a string literal"),
            ("worker_threads = 0", "async fn main() {}", "positive integer"),
            ("flavor = \"current_thread\", worker_threads = 2", "async fn main() {}", "needs the multi_thread"),
            ("start_paused = true", "async fn main() {}", "needs the current_thread"),
            ("unhandled_panic = \"abort\"", "async fn main() {}", "\"ignore\" or \"shutdown_runtime\""),
            ("threads = 2", "async fn main() {}", "unknown argument"),
            ("worker_threads = 2, worker_threads = 3", "async fn main() {}", "given twice"),
            ("", "fn main() {}", "goes on an `async fn`"),
            ("", "async fn main(x: u32) {}", "takes no arguments"),
        ];
        for (args, item, expected) in cases {
            let err = expand_str(args, item).unwrap_err();
            assert!(err.contains(expected), "{args} / {item}: {err}");
        }
    }
}
