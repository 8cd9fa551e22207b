#!/bin/sh
# A soak of 10 minutes (or $1 seconds) against one server process on 127.0.0.1: long-lived
# clients with requests and signals both ways, plus a steady churn of connections (logged-in
# clients that close, raw sockets that vanish without a close frame). Prints the server's
# RSS every 10 s; fails on any error or if the RSS at the end exceeds the first sample by more
# than the margin. Further options go to the bench: --clients 16 --rate 2000 --churn-rate 50
# --sample 10 --rss-margin 4194304 --server-threads 1.
set -eu
cd "$(dirname "$0")/.."
secs="${1:-600}"
[ $# -gt 0 ] && shift
exec cargo bench --bench load -- soak --duration "$secs" "$@"
