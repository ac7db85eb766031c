#!/bin/sh
# Runs a command (the benchmark) in a private network namespace in which Janus's media can stay
# on 127.0.0.0/8: libnice (Janus's ICE) never gathers on a loopback interface and pins its
# sockets to their interface, so Janus gets 127.0.1.1 on a veth end of its own (v0) and the load
# generator's connections to Janus use 127.0.1.2 on the other end (v1); route_localnet,
# accept_local and no reverse-path filter let 127/8 datagrams cross the pair. The namespace has
# no other interface: nothing in it reaches another host. Needs root (unshare -n).
#
#   bench/janus-netns.sh target/release/sluice-bench --janus /usr/bin/janus …
set -eu
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; }
exec unshare -n sh -eu -c '
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 127.0.1.1/32 dev v0
ip addr add 127.0.1.2/32 dev v1
ip link set v0 up
ip link set v1 up
for i in all v0 v1; do
  sysctl -qw net.ipv4.conf.$i.route_localnet=1 net.ipv4.conf.$i.accept_local=1 net.ipv4.conf.$i.rp_filter=0
done
exec "$@"' janus-netns "$@"
