#!/usr/bin/env bash
# `make demo`: a lab of containers, a policy loaded onto them, real connections allowed and denied
# with the rule that decided each, a live atomic update, `netc status`, and the lab torn down.
set -euo pipefail
cd "$(dirname "$0")/.."
NETC=".venv/bin/netc"
bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
if [ "$(id -u)" != 0 ]; then
  echo "make demo loads BPF programs and creates network namespaces: run it as root" >&2
  exit 1
fi

bold "netc check / test the policy, offline"
$NETC check examples/quickstart.netp
$NETC test examples/quickstart.netp | tail -n 1

bold "netc lab up examples/lab.yaml   (network namespaces standing in for containers)"
LAB=$($NETC lab up examples/lab.yaml | sed -n 1p)
INV=$($NETC lab inventory "$LAB")
cleanup() { $NETC unload "$LAB" >/dev/null 2>&1 || true; $NETC lab down "$LAB" >/dev/null 2>&1 || true; }
trap cleanup EXIT

probe() {  # probe FILE FROM TO PORT: a real TCP connection, and the rule that explains it
  local file=$1 from=$2 to=$3 port=$4 result why
  result=$($NETC lab probe "$LAB" "$from" "$to" "$port" --timeout 0.5 || true)
  why=$($NETC explain "$file" --inventory "$INV" --packet "tcp $from -> $to:$port" --brief)
  printf '  %-9s -> %-6s :%-5s %-10s %s\n' "$from" "$to" "$port" "$result" "$why"
}
probe_vip() {  # probe_vip FILE FROM VIP PORT: through a service's VIP, and who answered
  local file=$1 from=$2 to=$3 port=$4 result why
  result=$($NETC lab probe "$LAB" "$from" "$to" "$port" --timeout 0.5 || true)
  why=$($NETC explain "$file" --inventory "$INV" --packet "tcp $from -> $to:$port" --brief)
  printf '  %-9s -> %-10s :%-5s %-10s %s\n' "$from" "$to" "$port" "$result" "$why"
}
probes() {
  probe "$1" client-1 web-1 443
  probe "$1" client-1 web-1 22
  probe "$1" api-1 db-1 5432
  probe "$1" web-1 db-1 5432
  probe "$1" client-1 db-1 5432
}

bold "netc load examples/quickstart.netp --lab $LAB"
$NETC load examples/quickstart.netp --lab "$LAB"
probes examples/quickstart.netp

bold "live update: netc load examples/quickstart-update.netp (each link swaps program in one step)"
$NETC load examples/quickstart-update.netp --lab "$LAB"
probes examples/quickstart-update.netp
probe_vip examples/quickstart-update.netp client-1 10.96.0.20 80

bold "netc service list   (the new version's service: the VIP, its backends, live connections)"
$NETC service list --target "$LAB"

bold "a rule removed: netc load examples/quickstart-revoke.netp (in place: only its entries change)"
$NETC load examples/quickstart-revoke.netp --lab "$LAB"
probe examples/quickstart-revoke.netp client-1 db-1 5432
probe examples/quickstart-revoke.netp api-1 db-1 5432

bold "netc status"
$NETC status

bold "netc unload and lab down"
$NETC unload "$LAB" | tail -n 1
$NETC lab down "$LAB"
trap - EXIT
