#!/usr/bin/env bash
# Starts and stops a local Kubernetes control plane for tests and `make run`:
# etcd, kube-apiserver (TLS, RBAC) and kube-controller-manager (garbage collector,
# namespace and service-account controllers), all on loopback ports.
#
#   hack/testenv.sh up      build (cached) and start; prints the kubeconfig path
#   hack/testenv.sh down    stop exactly the processes `up` started
#   hack/testenv.sh restart <component> [seconds]
#                           kill -9 one component (etcd, kube-apiserver, kube-controller-manager),
#                           wait [seconds] (default 0), start it again with the same flags and
#                           ports, and wait until it serves again; etcd keeps its data
#   hack/testenv.sh status  say whether it runs
#   hack/testenv.sh env     print `export KUBECONFIG=...` for eval
#
# State lives in $TESTENV_DIR (default target/testenv): certificates, the admin
# kubeconfig, one log per component, and one pid file per component.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${TESTENV_DIR:-$repo/target/testenv}"
components=(etcd kube-apiserver kube-controller-manager)

log() { echo "testenv: $*" >&2; }

pid_alive() { # <component>
  local f="$dir/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

running() {
  local c
  for c in "${components[@]}"; do pid_alive "$c" || return 1; done
}

port_free() { # <port>: nothing accepts a connection on it
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  local p taken=" ${*:-} "
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    [[ "$taken" == *" $p "* ]] && continue
    if port_free "$p"; then echo "$p"; return; fi
  done
  log "no free loopback port found"; return 1
}

gen_certs() {
  local pki="$dir/pki"
  [[ -f "$pki/ca.crt" ]] && return
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=payi-testenv-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    sign() { # <name> <subject> [extfile]
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        ${3:+-extfile "$3"} -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc" \
      "extendedKeyUsage=serverAuth" "keyUsage=digitalSignature,keyEncipherment" > server.ext
    printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=digitalSignature,keyEncipherment" > client.ext
    sign apiserver "/CN=kube-apiserver" server.ext
    sign admin "/O=system:masters/CN=payi-testenv-admin" client.ext
    sign controller-manager "/CN=system:kube-controller-manager" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # <file> <port> <client cert name> <user>
  local pki="$dir/pki"
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$2
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $4
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$3.crt")
    client-key-data: $(base64 -w0 < "$pki/$3.key")
contexts:
- name: testenv
  context: {cluster: testenv, user: $4}
current-context: testenv
EOF
  chmod 600 "$1"
}

start() { # <component> <binary> <args...>
  local name="$1" bin="$2"; shift 2
  # Remember the exact command, so `restart` can bring the component back as it was.
  printf '%s\0' "$bin" "$@" > "$dir/$name.cmd"
  # A session of its own, so Ctrl-C in the terminal that ran `make run` stops the
  # operator but not the control plane. (No job control in this script, so the
  # child is not a group leader and setsid execs in place: $! is the component.)
  setsid "$bin" "$@" > "$dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$dir/$name.pid"
}

wait_for() { # <what> <seconds> <command...>
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then
      log "$what not ready after ${limit}s; logs in $dir"; tail -n 20 "$dir"/*.log >&2 || true
      down; return 1
    fi
    sleep 0.3
  done
}

up() {
  if running; then
    log "already running (pids $(cat "$dir"/*.pid | tr '\n' ' ')); reusing it"
    echo "$dir/kubeconfig"; return
  fi
  if compgen -G "$dir/*.pid" >/dev/null; then
    log "a previous control plane in $dir is partly down; stopping its remains first"; down
  fi
  local bin; bin="$("$repo/hack/testenv/build.sh")"
  mkdir -p "$dir"; gen_certs
  rm -rf "$dir/etcd-data"
  local pki="$dir/pki" etcd_port peer_port api_port kcm_port
  etcd_port="$(free_port)"; peer_port="$(free_port "$etcd_port")"
  api_port="$(free_port "$etcd_port" "$peer_port")"
  kcm_port="$(free_port "$etcd_port" "$peer_port" "$api_port")"

  # Test data is throwaway: skipping fsync makes etcd writes memory-speed.
  start etcd "$bin/etcd" --name testenv --data-dir "$dir/etcd-data" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "testenv=http://127.0.0.1:$peer_port" --listen-metrics-urls "" --log-level warn

  start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$dir/pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true --v 1

  write_kubeconfig "$dir/kubeconfig" "$api_port" admin payi-testenv-admin
  write_kubeconfig "$dir/controller-manager.kubeconfig" "$api_port" controller-manager system:kube-controller-manager
  wait_for "kube-apiserver" 90 "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --controllers garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --authentication-skip-lookup=true --v 1
  # Each controller runs under its own service account with the bootstrap RBAC
  # roles, as kubeadm clusters do, so the garbage collector may delete anything.
  wait_for "kube-controller-manager" 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$kcm_port"

  ln -sf "$bin/kubectl" "$dir/kubectl"
  log "control plane up: kube-apiserver https://127.0.0.1:$api_port ($("$bin/kubectl" --kubeconfig "$dir/kubeconfig" version -o json | awk -F'"' '/gitVersion/ {v=$4} END {print v}'))"
  log "export KUBECONFIG=$dir/kubeconfig"
  echo "$dir/kubeconfig"
}

restart() { # <component> [seconds down]
  local name="${1:-}" pause="${2:-0}" pid
  [[ " ${components[*]} " == *" $name "* ]] || { echo "usage: $0 restart etcd|kube-apiserver|kube-controller-manager [seconds]" >&2; exit 2; }
  [[ -f "$dir/$name.cmd" ]] || { log "$name was not started by this script"; exit 1; }
  if pid_alive "$name"; then
    pid="$(cat "$dir/$name.pid")"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
  log "$name killed; starting it again in ${pause}s"
  sleep "$pause"
  local cmd=()
  while IFS= read -r -d '' arg; do cmd+=("$arg"); done < "$dir/$name.cmd"
  setsid "${cmd[@]}" >> "$dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$dir/$name.pid"
  local bin; bin="$(dirname "${cmd[0]}")"
  wait_for "kube-apiserver after restarting $name" 90 "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz
  log "$name restarted"
}

down() {
  local c pid stopped=0
  for c in "${components[@]}"; do
    [[ -f "$dir/$c.pid" ]] || continue
    pid="$(cat "$dir/$c.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      stopped=$((stopped + 1))
    fi
    rm -f "$dir/$c.pid"
  done
  rm -rf "$dir/etcd-data"
  log "stopped $stopped process(es); logs kept in $dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) shift; restart "$@" ;;
  status) if running; then log "running"; else log "not running"; exit 1; fi ;;
  env) echo "export KUBECONFIG=$dir/kubeconfig" ;;
  *) echo "usage: $0 up|down|restart <component> [seconds]|status|env" >&2; exit 2 ;;
esac
