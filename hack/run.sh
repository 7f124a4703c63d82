#!/usr/bin/env bash
# `make run`: the whole thing on one machine, with money flowing.
#
# Brings up the local control plane (hack/testenv.sh; reused when it already runs),
# installs the CRDs, applies examples/, then starts beside it, all on free loopback
# ports:
#   - Redis, the limits ledger (Debian's redis-server via hack/tools/apt.sh;
#     persistence off: spend starts from 0 at every `make run`);
#   - the provider simulator of the tests as a demo AI provider
#     (`cargo run --example provider-sim`; OpenAI and Anthropic wire formats, no account);
#   - the operator (`payi-operator run --limits-redis-url ...`), which publishes
#     month-to-date spend on the objects' status every 5 s here (30 s by default);
#   - the metering gateway (`payi-operator gateway`), whose `openai` and `anthropic`
#     providers point at the simulator with a dummy credential.
# Then it prints one command to paste (a chat completion through the gateway with an
# example Application's key) and where its cost shows, and waits.
#
# Ctrl-C (or SIGTERM) stops the operator, the gateway, the simulator and Redis. The
# control plane keeps running (the next `make run` reuses it) until `hack/testenv.sh down`.
# State and logs: $TESTENV_DIR (default target/testenv); this script's logs in its run/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

log() { echo "run: $*" >&2; }

port_free() { # <port>: nothing accepts a connection on it (as hack/testenv.sh)
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() { # [ports already picked]
  local p taken=" ${*:-} "
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    [[ "$taken" == *" $p "* ]] && continue
    if port_free "$p"; then echo "$p"; return; fi
  done
  log "no free loopback port found"; return 1
}

pids=()
names=()
stop_all() {
  local i pid
  trap - EXIT INT TERM
  (( ${#pids[@]} )) || return 0
  # The last started first: the gateway and the operator before Redis and the simulator.
  for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do
    pid="${pids[i]}"
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  log "stopped ${names[*]}; logs kept in $run_dir"
  log "the control plane still runs (reused by the next make run); stop it with: hack/testenv.sh down"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # <name> <command...>: in the background, output to run/<name>.log
  local name="$1"; shift
  "$@" > "$run_dir/$name.log" 2>&1 < /dev/null &
  pids+=("$!"); names+=("$name")
}

wait_for() { # <what> <seconds> <command...>
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit)) i
  until "$@" >/dev/null 2>&1; do
    for i in "${!pids[@]}"; do
      if ! kill -0 "${pids[i]}" 2>/dev/null; then
        log "${names[i]} exited; the end of $run_dir/${names[i]}.log:"; tail -n 20 "$run_dir/${names[i]}.log" >&2; exit 1
      fi
    done
    if (( SECONDS > deadline )); then
      log "$what not ready after ${limit}s; logs in $run_dir"; exit 1
    fi
    sleep 0.3
  done
}

cargo build --quiet --bins --example provider-sim
redis_server="$(hack/tools/apt.sh redis-server)"

KUBECONFIG="$(hack/testenv.sh up)"
dir="$(cd "$(dirname "$KUBECONFIG")" && pwd)"
KUBECONFIG="$dir/kubeconfig"
export KUBECONFIG
kubectl="$dir/kubectl"
run_dir="$dir/run"
mkdir -p "$run_dir"

"$kubectl" apply --server-side --field-manager=payi-quickstart -f crds/ >/dev/null
"$kubectl" wait --for condition=established --timeout=60s -f crds/ >/dev/null
"$kubectl" apply --server-side --field-manager=payi-quickstart -f examples/ >/dev/null
log "CRDs installed and examples/ applied"

redis_port="$(free_port)"
operator_port="$(free_port "$redis_port")"
gateway_port="$(free_port "$redis_port" "$operator_port")"
metrics_port="$(free_port "$redis_port" "$operator_port" "$gateway_port")"
redis_url="redis://127.0.0.1:$redis_port"

# The ledger, in memory only: a demo loses nothing worth keeping.
start redis "$redis_server" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$run_dir"
rm -f "$run_dir/provider-sim.url"
start provider-sim target/debug/examples/provider-sim --url-file "$run_dir/provider-sim.url"

# Month-to-date spend on status.usage every 5 s (and limits status), so a request shows soon.
start operator env PAYI_USAGE_STATUS_SECONDS="${PAYI_USAGE_STATUS_SECONDS:-5}" \
  PAYI_LIMITS_STATUS_SECONDS="${PAYI_LIMITS_STATUS_SECONDS:-5}" \
  target/debug/payi-operator run --limits-redis-url "$redis_url" --http-addr "127.0.0.1:$operator_port"

wait_for "the provider simulator" 30 test -s "$run_dir/provider-sim.url"
sim_url="$(cat "$run_dir/provider-sim.url")"
# The simulator checks no credential; the gateway still sends one, as to a real provider.
echo "sk-demo-not-a-real-key" > "$run_dir/provider-credential"
cat > "$run_dir/providers.yaml" <<EOF
# Written by hack/run.sh: both providers are the local simulator ($run_dir/provider-sim.log).
providers:
  - name: openai
    kind: openai
    baseURL: $sim_url
    credentialFile: $run_dir/provider-credential
  - name: anthropic
    kind: anthropic
    baseURL: $sim_url
    credentialFile: $run_dir/provider-credential
EOF

wait_for "Redis" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$redis_port"
wait_for "the operator" 60 curl -sf "http://127.0.0.1:$operator_port/readyz"
# The example hierarchy judged and the key minted before the gateway lists it.
wait_for "the example hierarchy" 60 "$kubectl" -n engineering-prod wait --for condition=Ready --timeout=1s \
  application/content-creator-prod
"$kubectl" wait --for condition=Ready --timeout=30s group/engineering organization/company-xyz >/dev/null

start gateway target/debug/payi-operator gateway --providers-file "$run_dir/providers.yaml" \
  --listen-addr "127.0.0.1:$gateway_port" --metrics-addr "127.0.0.1:$metrics_port" \
  --limits-redis-url "$redis_url" --drain-seconds 2 --settle-seconds 2
wait_for "the gateway" 60 curl -sf "http://127.0.0.1:$metrics_port/readyz"

k="$kubectl --kubeconfig $KUBECONFIG"
cat >&2 <<MSG

Everything runs: control plane, operator (127.0.0.1:$operator_port), Redis ledger ($redis_url),
demo provider ($sim_url), metering gateway (127.0.0.1:$gateway_port, metrics 127.0.0.1:$metrics_port).
Logs: $run_dir/{operator,gateway,provider-sim,redis}.log

Send a chat completion through the gateway with the key of the Application content-creator-prod
(paste into another terminal):

  curl -s http://127.0.0.1:$gateway_port/openai/v1/chat/completions -H "Authorization: Bearer \$($k -n engineering-prod get secret content-creator-prod-payi-key -o jsonpath='{.data.PAYI_API_KEY}' | base64 -d)" -H 'Content-Type: application/json' -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello from make run"}]}'

Its cost then shows
  at once, in the gateway's metrics:
    curl -s 127.0.0.1:$metrics_port/metrics | grep payi_gateway_cost_usd_total
  within about 5 s, on the objects (Month-USD column; also payiorg, payiapp -A):
    $k get payigroup
  and in the tree (the kubectl plugin, built in target/debug; a plugin takes no flags before its name):
    KUBECONFIG=$KUBECONFIG PATH=$repo/target/debug:\$PATH $kubectl payi tree
  What the provider billed, line by line: $run_dir/provider-sim.log

Ctrl-C stops the operator, gateway, simulator and Redis; the control plane stays up until hack/testenv.sh down.

MSG

# Wait for Ctrl-C (the trap stops everything), or for one of them to exit on its own.
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[i]}" 2>/dev/null; then
      log "${names[i]} exited; the end of $run_dir/${names[i]}.log:"; tail -n 20 "$run_dir/${names[i]}.log" >&2; exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
