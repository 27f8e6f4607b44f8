#!/usr/bin/env bash
# infra/kafka.sh — a real single-node Apache Kafka broker (KRaft, broker+controller)
# for local meterflow development, built from Maven Central jars (no tarball).
#
# Usage: infra/kafka.sh {fetch|start|stop|restart|status|reset|logs}
#
#   fetch    download the broker's jars into the cache (idempotent)
#   start    fetch if needed, format storage once, start the broker in the
#            background and wait until it serves clients (harmless if running)
#   stop     SIGTERM, wait up to 30 s, then SIGKILL (harmless if not running)
#   restart  stop + start
#   status   "kafka: up (pid N, 127.0.0.1:PORT)" (exit 0) or "kafka: down" (exit 3)
#   reset    stop and delete all Kafka data (topics, messages, cluster id)
#   logs     print the path of the broker log and its last lines
#
# Environment:
#   METERFLOW_HOME                   cache/state root (default: $HOME/.cache/meterflow)
#     jars  $METERFLOW_HOME/jars/kafka-4.1.1/libs
#     data  $METERFLOW_HOME/data/kafka
#     logs  $METERFLOW_HOME/logs/kafka.log (broker), kafka.out (JVM stdout/stderr)
#     pid   $METERFLOW_HOME/run/kafka.pid
#   METERFLOW_KAFKA_PORT             client port            (default 19092)
#   METERFLOW_KAFKA_CONTROLLER_PORT  KRaft controller port  (default 19093)
#   METERFLOW_KAFKA_HEAP             JVM heap, -Xms = -Xmx  (default 512m)
#   METERFLOW_KAFKA_START_TIMEOUT    seconds `start` waits for readiness (default 90)
#   JAVA_HOME                        JDK to use (default: `java` on PATH; needs 17+)
#
# The broker listens on 127.0.0.1 only.
set -euo pipefail

readonly KAFKA_VERSION=4.1.1
readonly HOST=127.0.0.1
START_TIMEOUT="${METERFLOW_KAFKA_START_TIMEOUT:-90}"   # seconds
readonly STOP_TIMEOUT=30                                  # seconds

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
readonly CONF_DIR="$SCRIPT_DIR/kafka"
readonly POM="$CONF_DIR/pom.xml"
readonly TEMPLATE="$CONF_DIR/server.properties.template"
readonly LOG4J_CONF="$CONF_DIR/log4j2.properties"

METERFLOW_HOME="${METERFLOW_HOME:-$HOME/.cache/meterflow}"
PORT="${METERFLOW_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${METERFLOW_KAFKA_CONTROLLER_PORT:-19093}"
HEAP="${METERFLOW_KAFKA_HEAP:-512m}"

KAFKA_DIR="$METERFLOW_HOME/jars/kafka-$KAFKA_VERSION"
LIBS_DIR="$KAFKA_DIR/libs"
FETCH_MARKER="$KAFKA_DIR/.fetch-complete"
DATA_DIR="$METERFLOW_HOME/data/kafka"
LOG_DIRS="$DATA_DIR/kraft-combined-logs"
CLUSTER_ID_FILE="$DATA_DIR/cluster.id"
LOGS_DIR="$METERFLOW_HOME/logs"
BROKER_LOG="$LOGS_DIR/kafka.log"
CONSOLE_LOG="$LOGS_DIR/kafka.out"
RUN_DIR="$METERFLOW_HOME/run"
PID_FILE="$RUN_DIR/kafka.pid"
CONFIG_FILE="$RUN_DIR/kafka.properties"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

# ----------------------------------------------------------------------------- helpers

say() { printf 'kafka: %s\n' "$*"; }
err() { printf 'kafka: error: %s\n' "$*" >&2; }
die() { err "$@"; exit 1; }

now_ms() { date +%s%3N; }
elapsed() { # elapsed <start_ms> -> "12.3"
  local d=$(( $(now_ms) - $1 ))
  printf '%d.%d' $(( d / 1000 )) $(( (d % 1000) / 100 ))
}

check_port_value() {
  local name=$1 value=$2
  if ! [[ "$value" =~ ^[0-9]+$ ]] || (( value < 1 || value > 65535 )); then
    die "$name must be a TCP port number, got '$value'"
  fi
}

require_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install OpenJDK 17+ or set JAVA_HOME)"
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  if ! [[ "${v%%.*}" =~ ^[0-9]+$ ]] || (( ${v%%.*} < 17 )); then
    die "Kafka $KAFKA_VERSION needs Java 17+, '$JAVA' is Java ${v:-unknown}"
  fi
}

classpath() { printf '%s/*' "$LIBS_DIR"; }

# Client port of the running broker, from the config it was started with
# (it may differ from METERFLOW_KAFKA_PORT if that changed since).
running_port() {
  local p
  p="$(sed -n 's|^listeners=.*PLAINTEXT://[^,]*:\([0-9][0-9]*\).*|\1|p;T;q' "$CONFIG_FILE" 2>/dev/null || true)"
  printf '%s\n' "${p:-$PORT}"
}

# True while process $1 exists and is not a zombie waiting to be reaped.
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  [[ -n "$stat" && "$stat" != Z* ]]
}

# True when a TCP connect to HOST:$1 succeeds.
port_open() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Pid of a live broker JVM started with our config (found by scanning the
# process table), used when the pid file is missing.
find_orphan_pid() {
  local pid args
  while read -r pid args; do
    if [[ "$args" == *java* && "$args" == *" kafka.Kafka $CONFIG_FILE" ]] && pid_alive "$pid"; then
      printf '%s\n' "$pid"
      return 0
    fi
  done < <(ps -eo pid=,args= 2>/dev/null)
  return 1
}

# Pid of our broker if the pid file points at a live Kafka JVM, else nothing.
# A stale pid file (dead process, or pid reused by something else) is removed;
# a broker running without a pid file is adopted (pid file re-created).
running_pid() {
  if [[ ! -f "$PID_FILE" ]]; then
    local orphan
    orphan="$(find_orphan_pid)" || return 1
    mkdir -p "$RUN_DIR"
    printf '%s\n' "$orphan" >"$PID_FILE"
    say "found broker pid $orphan without a pid file; re-created $PID_FILE" >&2
    printf '%s\n' "$orphan"
    return 0
  fi
  local pid cmd
  pid="$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && pid_alive "$pid"; then
    cmd="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    if [[ "$cmd" == *java* && "$cmd" == *kafka.Kafka* && "$cmd" == *"$CONFIG_FILE"* ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  fi
  rm -f "$PID_FILE"
  say "removed stale pid file (pid ${pid:-?} is not a running broker)" >&2
  return 1
}

# Asks the broker for cluster metadata over the Kafka protocol (Metadata v12)
# and succeeds only if it lists this broker, i.e. the broker is serving client
# requests and is registered and unfenced in the KRaft controller, so topics
# can be created and produced to. Needs python3 (stdlib only).
broker_ready_api() {
  python3 - "$HOST" "$PORT" <<'PY' 2>/dev/null
import socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])

def uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def read_uvarint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]; i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7

def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

client_id = b"meterflow-kafka-sh"
# Request header v2: api_key=3 (Metadata), api_version=12, correlation_id, client_id, no tags.
header = struct.pack(">hhih", 3, 12, 7, len(client_id)) + client_id + uvarint(0)
# Metadata v12 body: topics = [] (compact array, length+1 = 1), allow_auto_topic_creation=false,
# include_topic_authorized_operations=false, no tagged fields.
body = uvarint(1) + b"\x00" + b"\x00" + uvarint(0)
request = header + body

with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(request)) + request)
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    resp = recv_exact(s, size)

# Response header v1: correlation_id, tagged fields.
corr = struct.unpack_from(">i", resp, 0)[0]
if corr != 7:
    sys.exit(1)
_, i = read_uvarint(resp, 4)          # header tags
i += 4                                 # throttle_time_ms
n, i = read_uvarint(resp, i)           # brokers: compact array (length + 1)
brokers = []
for _ in range(max(n - 1, 0)):
    node_id = struct.unpack_from(">i", resp, i)[0]; i += 4
    hl, i = read_uvarint(resp, i); i += hl - 1   # host (compact string)
    i += 4                                        # port
    rl, i = read_uvarint(resp, i); i += max(rl - 1, 0)  # rack (compact nullable string)
    _, i = read_uvarint(resp, i)                  # tags
    brokers.append(node_id)
sys.exit(0 if 1 in brokers else 1)
PY
}

# Readiness: the client port accepts connections and the broker answers a real
# Kafka API request with itself registered. Without python3, fall back to the
# broker's own "started" log line written after <log_offset> bytes of the log.
broker_ready() {
  local log_offset=$1
  port_open "$PORT" || return 1
  if command -v python3 >/dev/null 2>&1; then
    broker_ready_api
  else
    # grep -c (not -q): reads all input, so no SIGPIPE under pipefail.
    tail -c "+$(( log_offset + 1 ))" "$BROKER_LOG" 2>/dev/null | grep -c 'Kafka Server started' >/dev/null
  fi
}

# show_log_tail <broker_log_offset> <console_log_offset>: the last lines each
# log got during this start attempt (older runs are not shown).
show_log_tail() {
  local f off new
  for f in "$BROKER_LOG:$1" "$CONSOLE_LOG:$2"; do
    off=${f##*:}; f=${f%:*}
    [[ -f "$f" ]] || continue
    new="$(tail -c "+$(( off + 1 ))" "$f" | grep -v '^[[:space:]]*$' | tail -n 40 || true)"
    [[ -n "$new" ]] || continue
    printf '\n---- last lines of %s ----\n%s\n' "$f" "$new" >&2
  done
}

# ----------------------------------------------------------------------------- fetch

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }

fetch_complete() {
  [[ -f "$FETCH_MARKER" ]] && [[ "$(head -n1 "$FETCH_MARKER")" == "pom-sha256=$(pom_digest)" ]] \
    && compgen -G "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

cmd_fetch() {
  [[ -f "$POM" ]] || die "missing $POM"
  if fetch_complete; then
    say "jars already present: $LIBS_DIR ($(find "$LIBS_DIR" -name '*.jar' | wc -l) jars)"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven is needed once to download the Kafka jars)"
  require_java
  say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR ..."
  local t0 tmp
  t0=$(now_ms)
  mkdir -p "$KAFKA_DIR"
  tmp="$(mktemp -d "$KAFKA_DIR/libs.tmp.XXXXXX")"
  # mvn output is kept quiet (and out of the terminal) unless it fails.
  if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$tmp.mvn.log" >&2
    rm -rf "$tmp" "$tmp.mvn.log"
    die "mvn dependency:copy-dependencies failed (output above)"
  fi
  rm -f "$tmp.mvn.log"
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"; }
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  { echo "pom-sha256=$(pom_digest)"; echo "fetched=$(date -u +%FT%TZ)"; (cd "$LIBS_DIR" && ls -1 -- *.jar); } >"$FETCH_MARKER"
  say "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $(elapsed "$t0")s"
}

# ----------------------------------------------------------------------------- start

render_config() {
  [[ -f "$TEMPLATE" ]] || die "missing $TEMPLATE"
  local text leftover
  text="$(<"$TEMPLATE")"
  # Literal replacement of the placeholders (nothing else is expanded).
  # shellcheck disable=SC2016
  {
    text="${text//'${PORT}'/"$PORT"}"
    text="${text//'${CONTROLLER_PORT}'/"$CONTROLLER_PORT"}"
    text="${text//'${LOG_DIRS}'/"$LOG_DIRS"}"
    leftover="$(grep -v '^[[:space:]]*#' <<<"$text" | grep -m1 '\${' || true)"
  }
  [[ -z "$leftover" ]] || die "unreplaced placeholder in $TEMPLATE: $leftover"
  mkdir -p "$RUN_DIR"
  printf '%s\n' "$text" >"$CONFIG_FILE.tmp"
  mv "$CONFIG_FILE.tmp" "$CONFIG_FILE"
}

format_storage() {
  [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
  mkdir -p "$DATA_DIR"
  local cluster_id
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cluster_id="$(<"$CLUSTER_ID_FILE")"
  else
    cluster_id="$("$JAVA" -cp "$(classpath)" kafka.tools.StorageTool random-uuid | tail -n1)"
    [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "could not generate a cluster id (got '$cluster_id')"
    printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
  fi
  say "formatting storage in $LOG_DIRS (cluster id $cluster_id)"
  "$JAVA" -cp "$(classpath)" kafka.tools.StorageTool format \
      --standalone -t "$cluster_id" -c "$CONFIG_FILE" --ignore-formatted >&2 \
    || die "kafka-storage format failed"
}

cmd_start() {
  local pid
  if pid="$(running_pid)"; then
    local rport
    rport="$(running_port)"
    say "already running (pid $pid, $HOST:$rport)"
    [[ "$rport" == "$PORT" ]] || say "note: it listens on $rport, not METERFLOW_KAFKA_PORT=$PORT; run '$0 restart' to apply"
    return 0
  fi
  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "port $HOST:$p is already in use by another process (not started by $PID_FILE); set METERFLOW_KAFKA_PORT / METERFLOW_KAFKA_CONTROLLER_PORT"
    fi
  done

  fetch_complete || cmd_fetch
  require_java
  mkdir -p "$DATA_DIR" "$LOGS_DIR" "$RUN_DIR"
  render_config
  format_storage

  local t0 log_offset=0 out_offset=0
  t0=$(now_ms)
  [[ -f "$BROKER_LOG" ]] && log_offset=$(stat -c %s "$BROKER_LOG")
  [[ -f "$CONSOLE_LOG" ]] && out_offset=$(stat -c %s "$CONSOLE_LOG")
  printf '\n==== %s starting Kafka %s on %s:%s ====\n' "$(date -u +%FT%TZ)" "$KAFKA_VERSION" "$HOST" "$PORT" >>"$CONSOLE_LOG"

  # setsid: own session, so the broker survives the calling shell/terminal.
  # The inner shell writes its own pid and then execs java, so the pid file
  # holds the JVM's pid.
  # shellcheck disable=SC2016  # expanded by the inner bash
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    "$JAVA" "-Xms$HEAP" "-Xmx$HEAP" \
      -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      "-Dlog4j2.configurationFile=$LOG4J_CONF" "-Dkafka.logs.dir=$LOGS_DIR" \
      -cp "$(classpath)" kafka.Kafka "$CONFIG_FILE" \
    >>"$CONSOLE_LOG" 2>&1 </dev/null &
  local launcher=$!

  # Wait for the pid file written by the launcher.
  local _
  for _ in $(seq 1 50); do
    [[ -s "$PID_FILE" ]] && break
    sleep 0.1
  done
  pid="$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || pid=$launcher
  printf '%s\n' "$pid" >"$PID_FILE"

  say "starting (pid $pid), waiting up to ${START_TIMEOUT}s for $HOST:$PORT ..."
  local deadline=$(( $(date +%s) + START_TIMEOUT ))
  while :; do
    if ! pid_alive "$pid"; then
      rm -f "$PID_FILE"
      err "broker process exited during start-up"
      show_log_tail "$log_offset" "$out_offset"
      exit 1
    fi
    if broker_ready "$log_offset"; then
      break
    fi
    if (( $(date +%s) >= deadline )); then
      err "broker not ready after ${START_TIMEOUT}s; stopping it (pid $pid)"
      show_log_tail "$log_offset" "$out_offset"
      cmd_stop >&2
      exit 1
    fi
    sleep 0.5
  done
  say "up (pid $pid, $HOST:$PORT) — ready in $(elapsed "$t0")s; log: $BROKER_LOG"
}

# ----------------------------------------------------------------------------- stop / status / reset

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running"
    return 0
  fi
  local t0
  t0=$(now_ms)
  say "stopping (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + STOP_TIMEOUT ))
  while pid_alive "$pid"; do
    if (( $(date +%s) >= deadline )); then
      err "still running after ${STOP_TIMEOUT}s; sending SIGKILL (next start will run log recovery)"
      kill -KILL "$pid" 2>/dev/null || true
      local _
      for _ in $(seq 1 50); do
        pid_alive "$pid" || break
        sleep 0.2
      done
      pid_alive "$pid" && die "pid $pid survived SIGKILL"
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  say "stopped in $(elapsed "$t0")s"
}

cmd_status() {
  local pid
  if pid="$(running_pid 2>/dev/null)"; then
    local rport
    rport="$(running_port)"
    if port_open "$rport"; then
      echo "kafka: up (pid $pid, $HOST:$rport)"
    else
      echo "kafka: up (pid $pid, $HOST:$rport) — not accepting connections (yet)"
    fi
    return 0
  fi
  echo "kafka: down"
  return 3
}

cmd_reset() {
  cmd_stop
  case "$DATA_DIR" in
    */data/kafka) ;;
    *) die "refusing to delete unexpected data dir '$DATA_DIR'" ;;
  esac
  if [[ -e "$DATA_DIR" ]]; then
    rm -rf -- "$DATA_DIR"
    say "deleted $DATA_DIR"
  else
    say "no data at $DATA_DIR"
  fi
}

cmd_logs() {
  echo "$BROKER_LOG"
  [[ -f "$BROKER_LOG" ]] && tail -n "${1:-50}" "$BROKER_LOG"
  return 0
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

main() {
  check_port_value METERFLOW_KAFKA_PORT "$PORT"
  check_port_value METERFLOW_KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT"
  [[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "METERFLOW_KAFKA_START_TIMEOUT must be a number of seconds"
  [[ "$PORT" != "$CONTROLLER_PORT" ]] || die "METERFLOW_KAFKA_PORT and METERFLOW_KAFKA_CONTROLLER_PORT must differ"

  case "${1:-}" in
    fetch)   cmd_fetch ;;
    start)   cmd_start ;;
    stop)    cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status)  cmd_status ;;
    reset)   cmd_reset ;;
    logs)    shift; cmd_logs "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
