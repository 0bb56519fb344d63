//! `#[loopscope::main]`: a drop-in for `#[tokio::main]` that installs loopscope's recorder from the
//! environment, and `#[loopscope::test]`: a drop-in for `#[tokio::test]` that fails the test when
//! its async code blocks the runtime. Use them through the `loopscope` crate, which re-exports
//! them.

use std::time::Duration;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemFn, Lit, Meta, Token};

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
    entry(Kind::Main, args, item)
}

/// Marks an `async fn` as a test that runs on a tokio runtime under loopscope's stall detector
/// and fails when a poll blocked the runtime: `#[tokio::test]`'s arguments (`flavor`, default
/// `"current_thread"`; `worker_threads`, `start_paused`, `unhandled_panic`, `name`; `crate =
/// "path"` for where the `loopscope` crate is), plus `stall_threshold = "5ms"`, `strict` and
/// `allow = ["my_crate::log::flush", "src/log.rs"]`. See `loopscope::testing` and
/// docs/testing.md.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry(Kind::Test, args, item)
}

/// What `loopscope::test` is when the `loopscope` crate was built without its `test` feature:
/// one error that says how to turn it on.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn test_without_feature(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    let err = syn::Error::new(
        Span::call_site(),
        "#[loopscope::test] needs the `test` feature of the loopscope crate (it reads the \
         recorder's stacks with a symbolizer that programs which only embed the recorder do not \
         need). Add it where your tests get loopscope, in Cargo.toml:\n\n    \
         [dev-dependencies]\n    loopscope = { version = \"...\", features = [\"test\"] }",
    )
    .to_compile_error();
    quote!(#err #item).into()
}

fn entry(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let item_ts = TokenStream2::from(item);
    match expand(kind, args.into(), item_ts.clone()) {
        Ok(ts) => ts.into(),
        // Keep the function, so that one error does not bury the rest of the program in others.
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#err #item_ts).into()
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Main,
    Test,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Main => "#[loopscope::main]",
            Kind::Test => "#[loopscope::test]",
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
    name: Option<syn::LitStr>,
    krate: Option<syn::Path>,
    /// `#[loopscope::test]` only.
    stall_threshold: Option<Duration>,
    strict: Option<bool>,
    allow: Vec<syn::LitStr>,
}

impl Config {
    fn flavor(&self, kind: Kind) -> Flavor {
        self.flavor.map_or(
            match kind {
                // As tokio: `main` defaults to the multi-thread runtime, tests to the current thread.
                Kind::Main => Flavor::MultiThread,
                Kind::Test => Flavor::CurrentThread,
            },
            |(f, _)| f,
        )
    }
}

fn lit_str(value: &Expr, key: &str) -> syn::Result<syn::LitStr> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(syn::Error::new(other.span(), format!("`{key}` expects a string literal"))),
    }
}

fn lit_bool(value: &Expr, key: &str) -> syn::Result<bool> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Ok(b.value),
        other => Err(syn::Error::new(other.span(), format!("`{key}` expects true or false"))),
    }
}

/// The arguments each attribute takes, for the error about an unknown one.
fn expected_keys(kind: Kind) -> &'static str {
    match kind {
        Kind::Main => "expected `flavor`, `worker_threads`, `start_paused`, `unhandled_panic` or `crate`",
        Kind::Test => {
            "expected `flavor`, `worker_threads`, `start_paused`, `unhandled_panic`, `name`, `crate`, \
             `stall_threshold`, `strict` or `allow`"
        }
    }
}

fn parse_config(kind: Kind, args: TokenStream2) -> syn::Result<Config> {
    let mut config = Config {
        flavor: None,
        worker_threads: None,
        start_paused: None,
        unhandled_panic: None,
        name: None,
        krate: None,
        stall_threshold: None,
        strict: None,
        allow: Vec::new(),
    };
    let mut allow_given = false;
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    for meta in metas {
        let key = meta.path().get_ident().map(|i| i.to_string()).unwrap_or_default();
        let span = meta.span();
        let pair = match meta {
            Meta::NameValue(pair) => pair,
            // `strict` alone means `strict = true`.
            Meta::Path(p) if kind == Kind::Test && key == "strict" => {
                if config.strict.is_some() {
                    return Err(syn::Error::new(p.span(), "`strict` given twice"));
                }
                config.strict = Some(true);
                continue;
            }
            Meta::Path(p) if key_known(kind, &key) => {
                return Err(syn::Error::new(p.span(), format!("`{key}` needs a value: `{key} = ...`")));
            }
            other => {
                return Err(syn::Error::new(other.path().span(), format!("unknown argument: {}", expected_keys(kind))));
            }
        };
        let duplicate = || Err(syn::Error::new(span, format!("`{key}` given twice")));
        match key.as_str() {
            "flavor" => {
                if config.flavor.is_some() {
                    return duplicate();
                }
                let s = lit_str(&pair.value, "flavor")?;
                let flavor = match (s.value().as_str(), kind) {
                    ("multi_thread", _) => Flavor::MultiThread,
                    ("current_thread", _) => Flavor::CurrentThread,
                    // A test's current-thread runtime is tokio's `LocalRuntime` already.
                    ("local", Kind::Test) => Flavor::CurrentThread,
                    (other, Kind::Main) => {
                        return Err(syn::Error::new(
                            s.span(),
                            format!("unknown flavor `{other}`: expected \"multi_thread\" or \"current_thread\""),
                        ));
                    }
                    (other, Kind::Test) => {
                        return Err(syn::Error::new(
                            s.span(),
                            format!(
                                "unknown flavor `{other}`: expected \"current_thread\", \"local\" or \"multi_thread\""
                            ),
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
                config.start_paused = Some((lit_bool(&pair.value, "start_paused")?, span));
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
            "name" if kind == Kind::Test => {
                if config.name.is_some() {
                    return duplicate();
                }
                config.name = Some(lit_str(&pair.value, "name")?);
            }
            "stall_threshold" if kind == Kind::Test => {
                if config.stall_threshold.is_some() {
                    return duplicate();
                }
                let s = lit_str(&pair.value, "stall_threshold")?;
                let d = humantime::parse_duration(&s.value()).map_err(|e| {
                    syn::Error::new(
                        s.span(),
                        format!("`stall_threshold` expects a duration such as \"5ms\" or \"2500us\" ({e})"),
                    )
                })?;
                if d < Duration::from_millis(1) {
                    return Err(syn::Error::new(
                        s.span(),
                        "`stall_threshold` must be at least 1ms (the watchdog's resolution); `strict` catches \
                         blocking calls of any length",
                    ));
                }
                config.stall_threshold = Some(d);
            }
            "strict" if kind == Kind::Test => {
                if config.strict.is_some() {
                    return duplicate();
                }
                config.strict = Some(lit_bool(&pair.value, "strict")?);
            }
            "allow" if kind == Kind::Test => {
                if allow_given {
                    return duplicate();
                }
                allow_given = true;
                let expected = "`allow` expects a list of strings: functions (`my_crate::log::flush`) or source \
                                paths (`src/log.rs`) that may block";
                let Expr::Array(list) = &pair.value else {
                    return Err(syn::Error::new(pair.value.span(), expected));
                };
                for e in &list.elems {
                    let s = lit_str(e, "allow").map_err(|_| syn::Error::new(e.span(), expected))?;
                    if s.value().trim().is_empty() {
                        return Err(syn::Error::new(s.span(), "an empty `allow` entry would allow nothing"));
                    }
                    config.allow.push(s);
                }
            }
            _ => {
                return Err(syn::Error::new(pair.path.span(), format!("unknown argument: {}", expected_keys(kind))));
            }
        }
    }
    let flavor = config.flavor(kind);
    if let (Flavor::CurrentThread, Some((_, span))) = (flavor, &config.worker_threads) {
        return Err(syn::Error::new(*span, "`worker_threads` needs the multi_thread flavor"));
    }
    if let (Flavor::MultiThread, Some((true, span))) = (flavor, &config.start_paused) {
        return Err(syn::Error::new(*span, "`start_paused` needs the current_thread flavor"));
    }
    Ok(config)
}

fn key_known(kind: Kind, key: &str) -> bool {
    let common = ["flavor", "worker_threads", "start_paused", "unhandled_panic", "crate"];
    common.contains(&key) || (kind == Kind::Test && ["name", "stall_threshold", "allow"].contains(&key))
}

fn expand(kind: Kind, args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let config = parse_config(kind, args)?;
    let mut func: ItemFn = syn::parse2(item)?;
    if func.sig.asyncness.take().is_none() {
        return Err(syn::Error::new(func.sig.fn_token.span(), format!("{} goes on an `async fn`", kind.attribute())));
    }
    if kind == Kind::Main && !func.sig.inputs.is_empty() && func.sig.ident == "main" {
        return Err(syn::Error::new(func.sig.inputs.span(), "`main` takes no arguments"));
    }
    let krate = config.krate.clone().unwrap_or_else(|| syn::parse_quote!(::loopscope));
    let rt = quote!(#krate::__private::tokio::runtime);
    let mut setup = match config.flavor(kind) {
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
    if let Some(name) = &config.name {
        setup.extend(quote_spanned!(name.span()=> builder.name(#name);));
    }
    let output = match &func.sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => quote!(#ty),
    };
    match kind {
        Kind::Main => {
            let body = &func.block;
            // The body becomes a future whose output is the function's return type, so that `?`
            // and `return` inside it mean what they meant in the `async fn`.
            func.block = syn::parse2(quote! {
                {
                    let body = async move #body;
                    #setup
                    #krate::__private::block_on::<#output, _>(builder, body)
                }
            })?;
            Ok(quote!(#func))
        }
        Kind::Test => expand_test(func, &config, &krate, setup),
    }
}

fn expand_test(mut func: ItemFn, config: &Config, krate: &syn::Path, setup: TokenStream2) -> syn::Result<TokenStream2> {
    if !func.sig.inputs.is_empty() {
        return Err(syn::Error::new(func.sig.inputs.span(), "a test takes no arguments"));
    }
    if let Some(generics) = func.sig.generics.lt_token {
        return Err(syn::Error::new(generics.span(), "a test has no generic parameters"));
    }
    if let Some(attr) = func.attrs.iter().find(|a| a.path().is_ident("test")) {
        return Err(syn::Error::new(
            attr.span(),
            "#[loopscope::test] makes the function a test already: remove this #[test]",
        ));
    }
    let ident = func.sig.ident.clone();
    let output = func.sig.output.clone();
    let body = &func.block;
    let mut run = quote!(#krate::testing::TestRun::new(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)))
        .compiled_in(::core::option_env!("CARGO_MANIFEST_DIR")));
    if let Some(d) = config.stall_threshold {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        run.extend(quote!(.stall_threshold(::core::time::Duration::from_nanos(#ns))));
    }
    if let Some(strict) = config.strict {
        run.extend(quote!(.strict(#strict)));
    }
    for pattern in &config.allow {
        run.extend(quote_spanned!(pattern.span()=> .allow(#pattern)));
    }
    let multi_thread = config.flavor(Kind::Test) == Flavor::MultiThread;
    // The body is an `async fn` of its own: the test's task is spawned from this call (its spawn
    // site is the test's name), and whether its future is `Send` (which the multi-thread runtime
    // needs to run it as a task) is decided from a type defined outside this function's body.
    // `(&&Body(..)).run(..)` picks the spawning implementation when the future is `Send`, and the
    // one that runs it in place otherwise (method resolution tries `&&Body` before `&Body`).
    // The method's name carries the test's name's span: the body's task is spawned "at" the test
    // (`#[track_caller]`), while the locals keep this expansion's hygiene (a test defined by a
    // `macro_rules!` macro has a name from another context).
    let run_method = syn::Ident::new("run", ident.span());
    let call = quote! {
        (&&&#krate::__private::test::Body::new(__loopscope_test_body())).#run_method(run, builder, #multi_thread)
    };
    func.block = syn::parse2(quote! {
        {
            async fn __loopscope_test_body() #output #body
            #setup
            let run = #run;
            #[allow(unused_imports)]
            use #krate::__private::test::{RunInPlace as _, RunReported as _, RunSpawned as _};
            #call
        }
    })?;
    Ok(quote! {
        #[::core::prelude::v1::test]
        #func
    })
}

#[cfg(test)]
mod tests {
    use super::{Kind, expand};

    fn expand_str(kind: Kind, args: &str, item: &str) -> Result<String, String> {
        expand(kind, args.parse().unwrap(), item.parse().unwrap()).map(|t| t.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn tokio_mains_arguments_build_the_same_runtime() {
        let main = |args, item| expand_str(Kind::Main, args, item);
        let out = main("", "async fn main() {}").unwrap();
        assert!(out.contains("new_multi_thread"), "{out}");
        assert!(out.contains(":: loopscope :: __private :: block_on :: < () , _ >"), "{out}");
        let out = main("flavor = \"multi_thread\", worker_threads = 4", "async fn main() {}").unwrap();
        assert!(out.contains("worker_threads (4)"), "{out}");
        let out = main("flavor = \"current_thread\", start_paused = true", "async fn main() {}").unwrap();
        assert!(out.contains("new_current_thread") && out.contains("start_paused (true)"), "{out}");
        let out = main("unhandled_panic = \"shutdown_runtime\"", "async fn main() {}").unwrap();
        assert!(out.contains("UnhandledPanic :: ShutdownRuntime"), "{out}");
        let out = main("crate = \"my::ls\"", "async fn main() -> std::io::Result<()> { Ok(()) }").unwrap();
        assert!(out.contains("my :: ls :: __private :: block_on :: < std :: io :: Result < () > , _ >"), "{out}");
        assert!(!out.contains("async fn"), "the function is no longer async: {out}");
    }

    #[test]
    fn bad_arguments_are_compile_errors_that_say_what_was_expected() {
        let cases = [
            ("flavor = \"threaded\"", "async fn main() {}", "expected \"multi_thread\" or \"current_thread\""),
            ("flavor = \"local\"", "async fn main() {}", "expected \"multi_thread\" or \"current_thread\""),
            ("flavor = 1", "async fn main() {}", "`flavor` expects a string literal"),
            ("worker_threads = 0", "async fn main() {}", "positive integer"),
            ("flavor = \"current_thread\", worker_threads = 2", "async fn main() {}", "needs the multi_thread"),
            ("start_paused = true", "async fn main() {}", "needs the current_thread"),
            ("unhandled_panic = \"abort\"", "async fn main() {}", "\"ignore\" or \"shutdown_runtime\""),
            ("threads = 2", "async fn main() {}", "unknown argument"),
            ("strict", "async fn main() {}", "unknown argument"),
            ("stall_threshold = \"5ms\"", "async fn main() {}", "unknown argument"),
            ("worker_threads = 2, worker_threads = 3", "async fn main() {}", "given twice"),
            ("", "fn main() {}", "#[loopscope::main] goes on an `async fn`"),
            ("", "async fn main(x: u32) {}", "takes no arguments"),
        ];
        for (args, item, expected) in cases {
            let err = expand_str(Kind::Main, args, item).unwrap_err();
            assert!(err.contains(expected), "{args} / {item}: {err}");
        }
    }

    #[test]
    fn a_test_runs_its_body_as_a_task_on_tokio_tests_runtime() {
        let test = |args, item| expand_str(Kind::Test, args, item);
        let out = test("", "async fn works() {}").unwrap();
        assert!(out.starts_with("# [:: core :: prelude :: v1 :: test]"), "{out}");
        assert!(out.contains("new_current_thread"), "tokio's default flavor for tests: {out}");
        assert!(out.contains("async fn __loopscope_test_body ()"), "{out}");
        assert!(out.contains(":: loopscope :: __private :: test :: Body :: new"), "{out}");
        assert!(out.contains(". run (run , builder , false)"), "{out}");
        assert!(out.contains("compiled_in (:: core :: option_env ! (\"CARGO_MANIFEST_DIR\"))"), "{out}");
        let out = test("flavor = \"multi_thread\", worker_threads = 2", "async fn works() {}").unwrap();
        assert!(out.contains("new_multi_thread") && out.contains("worker_threads (2)"), "{out}");
        assert!(out.contains(". run (run , builder , true)"), "{out}");
        let out = test("flavor = \"local\", start_paused = true, name = \"t\"", "async fn works() {}").unwrap();
        assert!(out.contains("new_current_thread") && out.contains("start_paused (true)"), "{out}");
        assert!(out.contains("builder . name (\"t\")"), "{out}");
        let out = test(
            "stall_threshold = \"5ms\", strict, allow = [\"app::log::flush\", \"src/log.rs\"]",
            "#[should_panic] async fn works() -> std::io::Result<()> { Ok(()) }",
        )
        .unwrap();
        assert!(out.contains(". stall_threshold (:: core :: time :: Duration :: from_nanos (5000000u64))"), "{out}");
        assert!(out.contains(". strict (true)"), "{out}");
        assert!(out.contains(". allow (\"app::log::flush\") . allow (\"src/log.rs\")"), "{out}");
        assert!(out.contains("# [should_panic]"), "the test's own attributes stay: {out}");
        assert!(out.contains("async fn __loopscope_test_body () -> std :: io :: Result < () >"), "{out}");
        let out = test("strict = false, crate = \"ls\"", "async fn works() {}").unwrap();
        assert!(out.contains(". strict (false)") && out.contains("ls :: testing :: TestRun"), "{out}");
    }

    #[test]
    fn bad_test_arguments_are_compile_errors_that_say_what_was_expected() {
        let cases = [
            ("flavor = \"threaded\"", "async fn t() {}", "expected \"current_thread\", \"local\" or \"multi_thread\""),
            ("worker_threads = 2", "async fn t() {}", "needs the multi_thread"),
            ("stall_threshold = \"5 parsecs\"", "async fn t() {}", "expects a duration such as \"5ms\""),
            ("stall_threshold = \"500us\"", "async fn t() {}", "at least 1ms"),
            ("stall_threshold = 5", "async fn t() {}", "`stall_threshold` expects a string literal"),
            ("strict = 1", "async fn t() {}", "`strict` expects true or false"),
            ("strict, strict", "async fn t() {}", "given twice"),
            ("allow = \"src/log.rs\"", "async fn t() {}", "`allow` expects a list of strings"),
            ("allow = [1]", "async fn t() {}", "`allow` expects a list of strings"),
            ("allow = [\" \"]", "async fn t() {}", "would allow nothing"),
            ("allow", "async fn t() {}", "`allow` needs a value"),
            ("threshold = \"5ms\"", "async fn t() {}", "unknown argument: expected `flavor`"),
            ("", "fn t() {}", "#[loopscope::test] goes on an `async fn`"),
            ("", "async fn t(x: u32) {}", "a test takes no arguments"),
            ("", "#[test] async fn t() {}", "remove this #[test]"),
        ];
        for (args, item, expected) in cases {
            let err = expand_str(Kind::Test, args, item).unwrap_err();
            assert!(err.contains(expected), "{args} / {item}: {err}");
        }
    }
}
