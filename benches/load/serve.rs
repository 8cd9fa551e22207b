//! `serve`: the server process, one of the servers on a listener of its own; our server's
//! options.

use std::io::{Read, Write};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_webwire::server::{Handler, Server};

use crate::fastws::serve_fastwebsockets;
use crate::handlers::{Echo, Match20, router20};
use crate::minimal::{Buffers, serve_minimal};
use crate::options::{EchoKind, Impl, Options, parse_size};
#[cfg(feature = "metrics")]
use crate::recorder::AtomicRecorder;
use crate::soak::serve_soak;
use crate::{Result, runtime};

pub(crate) fn serve_main(opts: &Options) -> Result<()> {
    let which: Impl = opts.str_or("impl", "ours").parse()?;
    let limit = opts.size_or("max-message-size", 8192)?;
    let max_concurrent = opts.size_or("max-concurrent", 64)?;
    let threads = opts.size_or("threads", 1)?;
    let ours = OursOptions {
        limit,
        max_concurrent,
        defaults: opts.bool_or("defaults", false)?,
        write_timeout: opts.secs("write-timeout")?,
        write_batch: opts.get("write-batch").map(parse_size).transpose()?,
    };
    let handler: EchoKind = opts.str_or("handler", "echo").parse()?;
    #[cfg(feature = "metrics")]
    if std::env::var_os("WEBWIRE_BENCH_RECORDER").is_some() {
        metrics::set_global_recorder(AtomicRecorder)?;
    }
    // Exit when the parent goes away (it holds our stdin).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    runtime(threads)?.block_on(async move {
        // Backlog 1024 for either server (tokio's bind: 128), so that a burst of connects
        // (`idle`, the soak's churn) measures the server, not dropped and resent SYNs.
        let listener = tokio_webwire::server::bind("127.0.0.1:0").await?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", listener.local_addr()?)?;
        stdout.flush()?;
        match which {
            Impl::Ours => match handler {
                EchoKind::Match20 => serve_ours(listener, Match20, &ours).await,
                EchoKind::Router20 => {
                    let router = router20().build()?;
                    serve_ours(listener, router, &ours).await
                }
                EchoKind::Echo | EchoKind::EchoAsync => {
                    let yields = handler == EchoKind::EchoAsync;
                    serve_ours(listener, Echo { yields }, &ours).await
                }
            },
            Impl::Minimal => serve_minimal(listener, limit, Buffers::GENEROUS).await,
            Impl::MinimalSmall => serve_minimal(listener, limit, Buffers::SMALL).await,
            Impl::FastWebSockets => serve_fastwebsockets(listener, limit, true).await,
            Impl::FastWebSocketsDirect => serve_fastwebsockets(listener, limit, false).await,
            Impl::Soak => serve_soak(listener).await,
        }
    })
}

/// The options of `serve --impl ours`.
#[derive(Debug)]
struct OursOptions {
    limit: usize,
    max_concurrent: usize,
    /// The builder's defaults instead of `limit` and `max_concurrent` (and the outbound
    /// queue raised to match).
    defaults: bool,
    /// The builder's default (10 s) if not given.
    write_timeout: Option<Duration>,
    /// `write_batch_size`; the builder's default if not given.
    write_batch: Option<usize>,
}

async fn serve_ours<H: Handler>(
    listener: TcpListener,
    handler: H,
    opts: &OursOptions,
) -> Result<()> {
    let mut builder = Server::builder(handler);
    if !opts.defaults {
        builder = builder
            .max_message_size(opts.limit)
            .max_concurrent_requests(opts.max_concurrent)
            .outbound_queue_len(opts.max_concurrent.max(64))
            // The idle mode opens as many connections as it is asked to, all from the load
            // generator's one address: the limits per source are for servers of many.
            .max_connections(0)
            .max_connections_per_source(0)
            .max_pending_upgrades_per_source(0)
            .source_connect_rate(0, 1);
    }
    if let Some(timeout) = opts.write_timeout {
        builder = builder.write_timeout(timeout);
    }
    if let Some(bytes) = opts.write_batch {
        builder = builder.write_batch_size(bytes);
    }
    let server = builder.build()?;
    server.serve(listener).await;
    Ok(())
}
