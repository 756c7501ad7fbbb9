#!/usr/bin/env bash
# `make demo`: compile, test and explain examples/quickstart.netp.
set -euo pipefail
cd "$(dirname "$0")/.."
NETC=.venv/bin/netc
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "netc check examples/quickstart.netp"
$NETC check examples/quickstart.netp

say "netc test examples/quickstart.netp   (the file's test blocks, against the reference semantics)"
$NETC test examples/quickstart.netp

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
say "netc compile examples/quickstart.netp -o quickstart.bpf.o --emit-c quickstart.c"
$NETC compile examples/quickstart.netp -o "$out/quickstart.bpf.o" --emit-c "$out/quickstart.c"
echo "generated C: $(wc -l < "$out/quickstart.c") lines; sections:"
llvm-objdump-16 -h "$out/quickstart.bpf.o" | awk '/tcx|maps|netc/ {print "   ", $2, $3}'

cat > "$out/inventory.yaml" <<'INV'
containers:
  - {name: web-1, addresses: [10.0.1.5, "fd00::1:5"], labels: {app: web}}
  - {name: api-1, addresses: [10.0.2.5, "fd00::2:5"], labels: {app: api}}
  - {name: db-1,  addresses: [10.0.3.5, "fd00::3:5"], labels: {app: db}}
INV
for pkt in "tcp 203.0.113.66:40000 -> web-1:443" "tcp web-1 -> db-1:5432" "tcp api-1 -> db-1:5432"; do
  say "netc explain --packet \"$pkt\""
  $NETC explain examples/quickstart.netp --inventory "$out/inventory.yaml" --packet "$pkt"
done

if [ "$(id -u)" = 0 ]; then
  say "netc test --kernel examples/quickstart.netp   (the same expectations under BPF_PROG_TEST_RUN)"
  $NETC test --kernel examples/quickstart.netp | tail -n 3
fi
