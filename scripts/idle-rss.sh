#!/bin/sh
# RSS per idle connection at 10 000 connections (or $1), ours and the minimal servers.
# Each connection takes a file descriptor in the bench process and one in the server
# process, so the open-files limit is raised first (the bench cannot: no libc, no unsafe).
set -eu
cd "$(dirname "$0")/.."
conns="${1:-10000}"
want=$((conns + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    echo "idle-rss: hard open-files limit $hard < $want; raising to what is allowed" >&2
    want=$hard
fi
ulimit -n "$want"
exec cargo bench --bench load -- idle --conns "$conns"
