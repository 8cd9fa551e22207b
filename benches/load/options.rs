//! The command line: `--name value` options, the servers and handlers chosen by name
//! ([`Impl`], [`EchoKind`]) and the load configurations ([`LoadSpec`]).

use std::fmt;
use std::time::Duration;

use crate::generators::{ClientGenerator, LoadGenerator, Pipelining, TungsteniteGenerator};
use crate::minimal::Buffers;
use crate::{BoxError, HEADER_ROOM, Result};

/// `--name value` pairs, parsed on demand.
#[derive(Debug, Default)]
pub(crate) struct Options(Vec<(String, String)>);

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let Some(key) = name.strip_prefix("--") else {
                return Err(format!("unexpected argument {name:?}").into());
            };
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            pairs.push((key.to_owned(), value.clone()));
        }
        Ok(Options(pairs))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub(crate) fn size_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), parse_size)
    }

    pub(crate) fn secs_or(&self, key: &str, default: f64) -> Result<Duration> {
        let secs = match self.get(key) {
            Some(v) => v.parse::<f64>()?,
            None => default,
        };
        Ok(Duration::from_secs_f64(secs))
    }

    pub(crate) fn secs(&self, key: &str) -> Result<Option<Duration>> {
        self.get(key)
            .map(|v| Ok(Duration::from_secs_f64(v.parse::<f64>()?)))
            .transpose()
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!("--{key} {other:?}: expected true or false").into()),
        }
    }

    /// `--impls a,b,..`, `default` if not given.
    pub(crate) fn impls_or(&self, default: &str) -> Result<Vec<Impl>> {
        self.str_or("impls", default)
            .split(',')
            .map(str::parse)
            .collect()
    }

    /// `--generators raw,client,client-unordered,client-pipeline`, `default` if not given.
    pub(crate) fn generators_or(&self, default: &str) -> Result<Vec<&'static dyn LoadGenerator>> {
        self.str_or("generators", default)
            .split(',')
            .map(|name| match name {
                "raw" => Ok(&TungsteniteGenerator as &dyn LoadGenerator),
                "client" => Ok(&ClientGenerator {
                    how: Pipelining::Tasks,
                } as &dyn LoadGenerator),
                "client-unordered" => Ok(&ClientGenerator {
                    how: Pipelining::Unordered,
                } as &dyn LoadGenerator),
                "client-pipeline" => Ok(&ClientGenerator {
                    how: Pipelining::Pipeline,
                } as &dyn LoadGenerator),
                other => Err(format!(
                    "unknown generator {other:?} (raw, client, client-unordered, client-pipeline)"
                )
                .into()),
            })
            .collect()
    }
}

/// `16`, `256k` (KiB), `1m` (MiB).
pub(crate) fn parse_size(text: &str) -> Result<usize> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    Ok(digits.parse::<usize>()? * unit)
}

/// An enum chosen by name on the command line: `FromStr` and `Display` from one table.
macro_rules! named {
    ($(#[$meta:meta])* enum $name:ident ($what:literal) {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl std::str::FromStr for $name {
            type Err = BoxError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} ({})",
                        $what,
                        [$($text),+].join(", ")
                    )
                    .into()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)+
                })
            }
        }
    };
}

named! {
    /// Which server a process runs.
    enum Impl ("server") {
        /// `tokio_webwire::server::Server` with an echo handler.
        Ours = "ours",
        /// [`serve_minimal`]: tokio-tungstenite and nothing else, [`Buffers::GENEROUS`].
        Minimal = "minimal",
        /// [`serve_minimal`] with [`Buffers::SMALL`].
        MinimalSmall = "minimal-4k16k",
        /// [`serve_fastwebsockets`]: fastwebsockets (and hyper for the handshake), its writes
        /// gathered by [`GatherWrites`].
        FastWebSockets = "fastwebsockets",
        /// [`serve_fastwebsockets`] writing each reply at once, as fastwebsockets' own echo
        /// example does.
        FastWebSocketsDirect = "fastwebsockets-direct",
        /// Our server with [`SoakHandler`] (echo, signals back, sessions): for `soak`.
        Soak = "soak",
    }
}

impl Impl {
    /// What the server is, for the printed header.
    pub(crate) fn describe(self) -> String {
        match self {
            Impl::Ours => "tokio-webwire's Server, echo handler".into(),
            Impl::Minimal => format!("minimal tokio-tungstenite echo loop, {}", Buffers::GENEROUS),
            Impl::MinimalSmall => format!(
                "minimal tokio-tungstenite echo loop, {} (our transport's before issue 22)",
                Buffers::SMALL
            ),
            Impl::FastWebSockets => "minimal fastwebsockets echo loop (hyper 1 upgrade; its \
                8 KiB read buffer grown to the frame), replies gathered and written when there \
                is nothing more to read or at 128 KiB (buffer freed once written)"
                .into(),
            Impl::FastWebSocketsDirect => "minimal fastwebsockets echo loop, each reply \
                written at once (a system call per reply, as in fastwebsockets' example)"
                .into(),
            Impl::Soak => "tokio-webwire's Server, soak handler".into(),
        }
    }
}

named! {
    /// The handler of `serve --impl ours`.
    enum EchoKind ("handler") {
        /// [`Echo`]: answers at once.
        Echo = "echo",
        /// [`Echo`] that yields once first.
        EchoAsync = "echo-async",
        /// [`Match20`]: a hand-written `match` over 20 names, `"echo"` the last arm.
        Match20 = "match20",
        /// [`router20`]: a router with the same 20 routes, `"echo"` added first (the
        /// longest walk down its list).
        Router20 = "router20",
    }
}

/// One load configuration: C connections × P requests in flight × S payload bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSpec {
    pub(crate) conns: usize,
    pub(crate) pipeline: usize,
    pub(crate) size: usize,
}

impl LoadSpec {
    pub(crate) fn parse_list(text: &str) -> Result<Vec<Self>> {
        text.split(',')
            .map(|item| {
                let parts: Vec<&str> = item.split('x').collect();
                let [c, p, s] = parts[..] else {
                    return Err(format!("config {item:?} is not CxPxS").into());
                };
                let spec = LoadSpec {
                    conns: c.parse()?,
                    pipeline: p.parse()?,
                    size: parse_size(s)?,
                };
                if spec.conns == 0 || spec.pipeline == 0 {
                    return Err(format!("config {item:?}: C and P must be positive").into());
                }
                Ok(spec)
            })
            .collect()
    }

    /// The message size limit both servers get for this load.
    pub(crate) fn max_message_size(&self) -> usize {
        (self.size + HEADER_ROOM).max(8192)
    }
}

impl fmt::Display for LoadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = if self.size >= 1024 && self.size % 1024 == 0 {
            format!("{}KiB", self.size / 1024)
        } else {
            format!("{}B", self.size)
        };
        write!(f, "C={} P={} S={size}", self.conns, self.pipeline)
    }
}
