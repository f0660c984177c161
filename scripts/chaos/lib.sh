# The chaos topology and its faults (docs/chaos.md), sourced by scripts/chaos/run.
#
# Every name starts with $SDC (default "sdc"), so scripts/chaos/clean finds what a killed run
# left. Addresses come from 198.18.0.0/15 (RFC 2544's range for network tests) only:
#
#   sdc-rK         the router of region K: bridge br0 198.18.K.1/24 holding the region's LAN,
#                  a link "rL" to the router of every other region L (198.19.1.x/30), a link
#                  "client" to the client namespace (198.19.0.x/30); forwards between them
#   sdc-rK-etcd    region K's etcd, 198.18.K.2 (client port 2379, peer port 2380)
#   sdc-rK-nI      node nI of region K, 198.18.K.(10+I), native port 7400; its link is "nI" on
#                  the router's bridge (down = the node is cut off)
#   sdc-client     the workload and every tool the runner calls: a link to each region's router,
#                  no forwarding (it never carries traffic between regions)
#
# Inter-region TCP leaving a region's LAN is redirected (nftables, in the router) through the
# region's fault proxy (chaos-proxy on port 7999), which dials the original destination: latency,
# jitter, loss, bandwidth and resets of the WAN are set there (the kernel has no netem).

SDC=${SDC:-sdc}

sdc_ns_list() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$SDC-" || true; }

# chaos_preflight: exit 2 with the reason when this machine cannot run the chaos suite.
chaos_preflight() {
  if [[ $(id -u) != 0 ]]; then
    echo "chaos: needs root (network namespaces, veth links, nftables); skipped" >&2
    exit 2
  fi
  local probe="$SDC-probe-$$"
  if ! ip netns add "$probe" 2>/dev/null; then
    echo "chaos: network namespaces are unavailable here (ip netns add failed); skipped" >&2
    exit 2
  fi
  if ! ip -n "$probe" link add name pa type veth peer name pb 2>/dev/null ||
     ! command -v nft >/dev/null || ! ip netns exec "$probe" nft add table ip probe 2>/dev/null; then
    ip netns del "$probe" 2>/dev/null || true
    echo "chaos: veth links or nftables are unavailable here (scripts/setup installs nftables); skipped" >&2
    exit 2
  fi
  ip netns del "$probe"
}

inter_subnet_index() {  # inter_subnet_index K L (K < L): the pair's /30 index
  echo $((($1 - 1) * 8 + $2))
}

# net_up REGIONS NODES: namespaces, links, addresses and routes (NODES per region, spares included).
net_up() {
  local regions=$1 nodes=$2 k l i
  ip netns add "$SDC-client"
  ip -n "$SDC-client" link set lo up
  ip netns exec "$SDC-client" sysctl -qw net.ipv4.ip_forward=0
  for k in $(seq 1 "$regions"); do
    local router="$SDC-r$k"
    ip netns add "$router"
    ip -n "$router" link set lo up
    ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$router" link add br0 type bridge
    ip -n "$router" addr add "198.18.$k.1/24" dev br0
    ip -n "$router" link set br0 up
    ip -n "$router" route add blackhole 198.18.0.0/15 metric 1000
    host_up "$k" etcd 2
    for i in $(seq 1 "$nodes"); do host_up "$k" "n$i" $((10 + i)); done
    # The client's link to this region.
    ip link add client netns "$router" type veth peer name "r$k" netns "$SDC-client"
    ip -n "$router" addr add "198.19.0.$((4 * k + 1))/30" dev client
    ip -n "$SDC-client" addr add "198.19.0.$((4 * k + 2))/30" dev "r$k"
    ip -n "$router" link set client up
    ip -n "$SDC-client" link set "r$k" up
    ip -n "$SDC-client" route add "198.18.$k.0/24" via "198.19.0.$((4 * k + 1))"
  done
  for k in $(seq 1 "$regions"); do
    for l in $(seq $((k + 1)) "$regions"); do
      local m
      m=$(inter_subnet_index "$k" "$l")
      ip link add "r$l" netns "$SDC-r$k" type veth peer name "r$k" netns "$SDC-r$l"
      ip -n "$SDC-r$k" addr add "198.19.1.$((4 * m + 1))/30" dev "r$l"
      ip -n "$SDC-r$l" addr add "198.19.1.$((4 * m + 2))/30" dev "r$k"
      ip -n "$SDC-r$k" link set "r$l" up
      ip -n "$SDC-r$l" link set "r$k" up
      ip -n "$SDC-r$k" route add "198.18.$l.0/24" via "198.19.1.$((4 * m + 2))"
      ip -n "$SDC-r$l" route add "198.18.$k.0/24" via "198.19.1.$((4 * m + 1))"
    done
  done
}

host_up() {  # host_up K NAME HOSTNUM: namespace sdc-rK-NAME on region K's bridge
  local k=$1 name=$2 num=$3 ns="$SDC-r$1-$2" router="$SDC-r$1"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name "$name" netns "$router"
  ip -n "$router" link set "$name" master br0
  ip -n "$router" link set "$name" up
  ip -n "$ns" addr add "198.18.$k.$num/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "198.18.$k.1"
}

# wan_proxy_up K PROXY_BIN LOG: region K's fault proxy and the rule that sends its outgoing
# inter-region TCP through it. Settings in $chaos_dir/proxy-rK.conf, reread on SIGHUP.
wan_proxy_up() {
  local k=$1 bin=$2 log=$3 router="$SDC-r$1"
  : >"$chaos_dir/proxy-r$k.conf"
  (ip netns exec "$router" "$bin" --listen 0.0.0.0:7999 --config "$chaos_dir/proxy-r$k.conf" \
    --seed "$((${seed:-1} + k))" \
    >>"$log" 2>&1 & echo $! >"$chaos_dir/proxy-r$k.pid")
  ip netns exec "$router" nft -f - <<NFT
table ip chaos {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "br0" ip daddr 198.18.0.0/16 ip daddr != 198.18.$k.0/24 meta l4proto tcp redirect to :7999
  }
}
NFT
}

# wan_set K SETTINGS...: the fault proxy of region K from now on ("latency_ms=80 jitter_ms=20
# drop=0.01 bandwidth_bps=1000000 reset=0.001"; nothing: a clean link).
wan_set() {
  local k=$1
  shift
  printf '%s\n' "$@" >"$chaos_dir/proxy-r$k.conf"
  kill -HUP "$(cat "$chaos_dir/proxy-r$k.pid")"
}

# link_down K IFACE / link_up K IFACE: cut or heal, in region K's router, a node's link (nI) or the
# WAN link to region L (rL, both directions). A cut WAN drops packets silently (the router's
# blackhole route), as a partition does; the route comes back with the link.
link_down() { ip -n "$SDC-r$1" link set "$2" down; }
link_up() {
  ip -n "$SDC-r$1" link set "$2" up
  if [[ $2 == r* ]]; then
    local k=$1 l=${2#r} m
    if ((k < l)); then
      m=$(inter_subnet_index "$k" "$l")
      ip -n "$SDC-r$k" route replace "198.18.$l.0/24" via "198.19.1.$((4 * m + 2))"
      ip -n "$SDC-r$l" route replace "198.18.$k.0/24" via "198.19.1.$((4 * m + 1))"
    else
      m=$(inter_subnet_index "$l" "$k")
      ip -n "$SDC-r$k" route replace "198.18.$l.0/24" via "198.19.1.$((4 * m + 1))"
      ip -n "$SDC-r$l" route replace "198.18.$k.0/24" via "198.19.1.$((4 * m + 2))"
    fi
  fi
}

# etcd_cut K I / etcd_heal K I: node I of region K can no longer reach its etcd (nor etcd it),
# while clients and the other nodes still reach it: a bridge filter in the router.
etcd_cut() {
  ip netns exec "$SDC-r$1" nft -f - <<NFT
table bridge chaos_n$2 {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip saddr 198.18.$1.$((10 + $2)) ip daddr 198.18.$1.2 drop
    ip saddr 198.18.$1.2 ip daddr 198.18.$1.$((10 + $2)) drop
  }
}
NFT
}
etcd_heal() { ip netns exec "$SDC-r$1" nft delete table bridge "chaos_n$2" 2>/dev/null || true; }

# net_down: every process in our namespaces killed, every namespace (and with it every link) gone.
net_down() {
  local ns pass
  for pass in 1 2 3; do
    for ns in $(sdc_ns_list); do
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    done
  done
  for ns in $(sdc_ns_list); do
    local deadline=$((SECONDS + 10))
    while [[ -n $(ip netns pids "$ns" 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.05; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
