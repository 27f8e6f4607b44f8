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
SERVICE=kafka NOUN=broker
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly KAFKA_VERSION=4.1.1
readonly CONF_DIR="$SCRIPT_DIR/kafka"
readonly POM="$CONF_DIR/pom.xml"
readonly TEMPLATE="$CONF_DIR/server.properties.template"
readonly LOG4J_CONF="$CONF_DIR/log4j2.properties"

PORT="${METERFLOW_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${METERFLOW_KAFKA_CONTROLLER_PORT:-19093}"
HEAP="${METERFLOW_KAFKA_HEAP:-512m}"
START_TIMEOUT="${METERFLOW_KAFKA_START_TIMEOUT:-90}"   # seconds

KAFKA_DIR="$METERFLOW_HOME/jars/kafka-$KAFKA_VERSION"
LIBS_DIR="$KAFKA_DIR/libs"
FETCH_MARKER="$KAFKA_DIR/.fetch-complete"
LOG_DIRS="$DATA_DIR/kraft-combined-logs"
CLUSTER_ID_FILE="$DATA_DIR/cluster.id"
BROKER_LOG="$LOGS_DIR/kafka.log"
CONFIG_FILE="$RUN_DIR/kafka.properties"
SERVICE_LOGS=("$BROKER_LOG" "$LOGS_DIR/kafka.out")   # broker log, JVM stdout/stderr
ADOPT_ORPHANS=1
KILL_NOTE=" (next start will run log recovery)"
SILENT_NOTE="not accepting connections (yet)"

# ----------------------------------------------------------------------------- lib.sh hooks

is_ours() { [[ "$1" == *java* && "$1" == *" kafka.Kafka $CONFIG_FILE" ]]; }
service_addr() { printf '%s:%s\n' "$HOST" "$1"; }
service_answers() { port_open "$1"; }

# Client port of the running broker, from the config it was started with
# (it may differ from METERFLOW_KAFKA_PORT if that changed since).
running_port() {
  local p
  p="$(sed -n 's|^listeners=.*PLAINTEXT://[^,]*:\([0-9][0-9]*\).*|\1|p;T;q' "$CONFIG_FILE" 2>/dev/null || true)"
  printf '%s\n' "${p:-$PORT}"
}

# ----------------------------------------------------------------------------- readiness

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
# broker's own "started" log line written during this start.
broker_ready() {
  port_open "$PORT" || return 1
  if command -v python3 >/dev/null 2>&1; then
    broker_ready_api
  else
    # grep -c (not -q): reads all input, so no SIGPIPE under pipefail.
    tail -c "+$(( LOG_MARKS[0] + 1 ))" "$BROKER_LOG" 2>/dev/null | grep -c 'Kafka Server started' >/dev/null
  fi
}

# ----------------------------------------------------------------------------- fetch

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }
jar_count() { find "$LIBS_DIR" -name '*.jar' | wc -l; }

fetch_complete() {
  marker_matches "$FETCH_MARKER" "pom-sha256=$(pom_digest)" && [[ -f "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" ]]
}

mvn_copy_jars() { # mvn_copy_jars <dir>
  mvn_quiet -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$1" \
    || { err "mvn dependency:copy-dependencies failed (output above)"; return 1; }
  [[ -f "$1/kafka_2.13-$KAFKA_VERSION.jar" ]] || { err "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"; return 1; }
}

cmd_fetch() {
  [[ -f "$POM" ]] || die "missing $POM"
  if fetch_complete; then
    say "jars already present: $LIBS_DIR ($(jar_count) jars)"
    return 0
  fi
  require_java 17 "Kafka $KAFKA_VERSION"
  local t0
  t0=$(now_ms)
  fetch_into "$LIBS_DIR" mvn_copy_jars "Kafka $KAFKA_VERSION jars" "the Kafka jars"
  write_marker "$FETCH_MARKER" "pom-sha256=$(pom_digest)"
  (cd "$LIBS_DIR" && ls -1 -- *.jar) >>"$FETCH_MARKER"
  say "fetched $(jar_count) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $(elapsed "$t0")s"
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
  printf '%s\n' "$text" >"$CONFIG_FILE.tmp"
  mv "$CONFIG_FILE.tmp" "$CONFIG_FILE"
}

format_storage() {
  [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
  local cluster_id
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cluster_id="$(<"$CLUSTER_ID_FILE")"
  else
    cluster_id="$("$JAVA" -cp "$LIBS_DIR/*" kafka.tools.StorageTool random-uuid | tail -n1)"
    [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "could not generate a cluster id (got '$cluster_id')"
    printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
  fi
  say "formatting storage in $LOG_DIRS (cluster id $cluster_id)"
  "$JAVA" -cp "$LIBS_DIR/*" kafka.tools.StorageTool format \
      --standalone -t "$cluster_id" -c "$CONFIG_FILE" --ignore-formatted >&2 \
    || die "kafka-storage format failed"
}

cmd_start() {
  already_running && return 0
  ensure_ports_free "METERFLOW_KAFKA_PORT / METERFLOW_KAFKA_CONTROLLER_PORT" "$PORT" "$CONTROLLER_PORT"
  fetch_complete || cmd_fetch
  require_java 17 "Kafka $KAFKA_VERSION"
  mkdir -p "$DATA_DIR" "$LOGS_DIR" "$RUN_DIR"
  render_config
  format_storage
  local pid
  launch "Kafka $KAFKA_VERSION on $HOST:$PORT" "$PWD" \
    "$JAVA" "-Xms$HEAP" "-Xmx$HEAP" \
      -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      "-Dlog4j2.configurationFile=$LOG4J_CONF" "-Dkafka.logs.dir=$LOGS_DIR" \
      -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG_FILE"
  await_ready "" 0.5 broker_ready
}

# ----------------------------------------------------------------------------- reset / main

cmd_reset() {
  cmd_stop
  [[ -e "$DATA_DIR" ]] || { say "no data at $DATA_DIR"; return 0; }
  remove_data
}

check_port_value METERFLOW_KAFKA_PORT "$PORT"
check_port_value METERFLOW_KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT"
check_start_timeout
[[ "$PORT" != "$CONTROLLER_PORT" ]] || die "METERFLOW_KAFKA_PORT and METERFLOW_KAFKA_CONTROLLER_PORT must differ"
dispatch "$@"
