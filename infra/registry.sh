#!/usr/bin/env bash
# infra/registry.sh — a real Confluent-compatible schema registry for local
# meterflow development: Apicurio Registry (prebuilt server from Maven Central)
# serving the Confluent Schema Registry REST API at
#   http://127.0.0.1:PORT/apis/ccompat/v7
# (point confluent-kafka's SchemaRegistryClient at that URL).
#
# Usage: infra/registry.sh {fetch|start|stop|restart|status|reset|logs}
#
#   fetch    download and unpack the registry into the cache (idempotent)
#   start    fetch if needed, start in the background and wait until the
#            Confluent API answers and storage is ready (harmless if running)
#   stop     SIGTERM, wait up to 30 s, then SIGKILL (harmless if not running)
#   restart  stop + start
#   status   "registry: up (pid N, http://127.0.0.1:PORT/apis/ccompat/v7)" (exit 0)
#            or "registry: down" (exit 3)
#   reset    stop and delete every schema (kafkasql: the registry's Kafka
#            topics, so Kafka must be up; h2: the database files)
#   logs     print the path of the registry log and its last lines
#
# Storage: schemas must outlive restarts because Kafka records carry schema ids.
#   kafkasql (default)  schemas are a journal in Kafka topics (kafkasql-journal,
#                       kafkasql-snapshots, registry-events) on the meterflow
#                       broker, next to the data they describe, like Confluent's
#                       _schemas topic: `infra/kafka.sh reset` forgets both
#                       together. The broker must be up before `start`.
#   h2                  an H2 database file in $METERFLOW_HOME/data/registry;
#                       no Kafka needed.
#
# Schema ids are Confluent-style: one id per distinct schema (Apicurio content
# id), shared by every subject/version with that schema; equal schemas that
# differ only in whitespace or JSON key order are the same schema.
#
# Environment:
#   METERFLOW_HOME                  cache/state root (default: $HOME/.cache/meterflow)
#     app   $METERFLOW_JARS/apicurio-<version>  (METERFLOW_JARS default $METERFLOW_HOME/jars)
#     data  $METERFLOW_HOME/data/registry       (h2 database, kafkasql snapshots)
#     log   $METERFLOW_HOME/logs/registry.log
#     pid   $METERFLOW_HOME/run/registry.pid
#   METERFLOW_REGISTRY_PORT         HTTP port                   (default 18081)
#   METERFLOW_REGISTRY_MGMT_PORT    Quarkus management port, health checks; opened by
#                                   3.1+ builds only (default PORT+919: 18081 -> 19000)
#   METERFLOW_REGISTRY_STORAGE      kafkasql | h2               (default kafkasql)
#   METERFLOW_KAFKA_PORT            broker for kafkasql: 127.0.0.1:PORT (default 19092)
#   METERFLOW_REGISTRY_HEAP         JVM -Xmx                    (default 256m)
#   METERFLOW_REGISTRY_START_TIMEOUT seconds `start` waits      (default 120)
#   METERFLOW_REGISTRY_JAVA_OPTS    extra JVM options, appended last, so a
#                                   -Dkey=value here overrides the script's
#   METERFLOW_REGISTRY_VERSION      Apicurio version (default 3.0.9, the newest
#                                   that runs on Java 17; 3.3.x needs Java 21)
#   JAVA_HOME                       JDK to use (default: `java` on PATH)
#
# The registry listens on 127.0.0.1 only; no authentication.
set -euo pipefail
SERVICE=registry NOUN=registry
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly DEFAULT_VERSION=3.0.9            # keep in sync with infra/registry/pom.xml
readonly APICURIO_VERSION="${METERFLOW_REGISTRY_VERSION:-$DEFAULT_VERSION}"
readonly API_PATH=/apis/ccompat/v7
# Topics the kafkasql storage creates on the broker (Apicurio defaults).
readonly KAFKASQL_TOPICS="kafkasql-journal kafkasql-snapshots registry-events"
readonly POM="$SCRIPT_DIR/registry/pom.xml"

JARS_DIR="${METERFLOW_JARS:-$METERFLOW_HOME/jars}"
PORT="${METERFLOW_REGISTRY_PORT:-18081}"
MGMT_PORT="${METERFLOW_REGISTRY_MGMT_PORT:-}"
STORAGE="${METERFLOW_REGISTRY_STORAGE:-kafkasql}"
KAFKA_PORT="${METERFLOW_KAFKA_PORT:-19092}"
HEAP="${METERFLOW_REGISTRY_HEAP:-256m}"
START_TIMEOUT="${METERFLOW_REGISTRY_START_TIMEOUT:-120}"
EXTRA_JAVA_OPTS="${METERFLOW_REGISTRY_JAVA_OPTS:-}"

APP_DIR="$JARS_DIR/apicurio-$APICURIO_VERSION"
FETCH_MARKER="$APP_DIR/.fetch-complete"
SERVICE_LOGS=("$LOGS_DIR/registry.log")

# ----------------------------------------------------------------------------- lib.sh hooks

is_ours() {
  [[ "$1" == *java* && "$1" == *" -Dmeterflow.service=registry "* && "$1" == *" -Dmeterflow.home=$METERFLOW_HOME "* ]]
}
service_addr() { printf 'http://%s:%s%s\n' "$HOST" "$1" "$API_PATH"; }
service_answers() { [[ "$(http_status "$(service_addr "$1")/subjects")" == 200 ]]; }

# HTTP port of the running registry, from its command line (it may differ
# from METERFLOW_REGISTRY_PORT if that changed since it was started).
running_port() {
  local p
  p="$(ps -ww -o args= -p "$1" 2>/dev/null | grep -o -- '-Dquarkus\.http\.port=[0-9]*' | head -n1 | cut -d= -f2 || true)"
  printf '%s\n' "${p:-$PORT}"
}

# ----------------------------------------------------------------------------- helpers

# http_status <url> -> HTTP status code, or 000 when nothing answers.
http_status() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true
  else
    python3 - "$1" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
  fi
}

# first_match <glob>... -> the first existing path the globs expand to.
first_match() {
  local f
  for f in "$@"; do
    [[ -e "$f" ]] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

# The server's launcher jar: 3.0.x ships a legacy "runner" jar + lib/, later
# versions a Quarkus fast-jar (quarkus-run.jar + lib/ app/ quarkus/).
launcher_jar() {
  local d=${1:-$APP_DIR}
  first_match "$d/quarkus-run.jar" "$d"/apicurio-registry-app-*-runner.jar
}
fast_jar() { [[ -f "$APP_DIR/quarkus-run.jar" ]]; }

# Java release the registry's own classes were compiled for (class file major
# version - 44), read from the app jar; 17 if it cannot be determined.
required_java() {
  local jar major=
  if command -v unzip >/dev/null 2>&1 \
     && jar="$(first_match "$APP_DIR"/app/apicurio-registry-app-*.jar "$APP_DIR"/apicurio-registry-app-*-runner.jar)"; then
    major="$(unzip -p "$jar" 'io/apicurio/registry/*.class' 2>/dev/null | head -c 8 | od -An -tu1 | awk '{print $7 * 256 + $8}')" || true
  fi
  if [[ "$major" =~ ^[0-9]+$ ]] && (( major > 44 )); then echo $(( major - 44 )); else echo 17; fi
}

require_registry_java() {
  require_java "$(required_java)" "Apicurio Registry $APICURIO_VERSION" \
    "set JAVA_HOME, or use the default version $DEFAULT_VERSION which runs on Java 17"
}

# ----------------------------------------------------------------------------- fetch

fetch_complete() { marker_matches "$FETCH_MARKER" "apicurio=$APICURIO_VERSION" && launcher_jar >/dev/null; }

mvn_unpack() { # mvn_unpack <dir>
  mvn_quiet -f "$POM" dependency:unpack "-Dapicurio.version=$APICURIO_VERSION" "-Dregistry.unpack.dir=$1" \
    || { err "mvn dependency:unpack of io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all failed (output above)"; return 1; }
  rm -rf "$1/.mvn-build"
  launcher_jar "$1" >/dev/null || { err "no launcher jar in the unpacked registry ($1)"; return 1; }
}

cmd_fetch() {
  if fetch_complete; then
    say "Apicurio Registry $APICURIO_VERSION already present: $APP_DIR ($(du -sh "$APP_DIR" | cut -f1))"
    return 0
  fi
  [[ -f "$POM" ]] || die "missing $POM"
  local t0
  t0=$(now_ms)
  fetch_into "$APP_DIR" mvn_unpack "Apicurio Registry $APICURIO_VERSION" "the registry"
  write_marker "$FETCH_MARKER" "apicurio=$APICURIO_VERSION"
  say "fetched Apicurio Registry $APICURIO_VERSION ($(du -sh "$APP_DIR" | cut -f1)) in $(elapsed "$t0")s"
}

# ----------------------------------------------------------------------------- start

# Registry configuration as JVM system properties. Names are Apicurio 3.x /
# Quarkus properties (see application.properties inside the app jar).
registry_props() {
  local props=(
    "-Dmeterflow.service=registry"
    "-Dmeterflow.home=$METERFLOW_HOME"
    "-Dquarkus.http.host=$HOST"
    "-Dquarkus.http.port=$PORT"
    "-Dquarkus.management.host=$HOST"
    "-Dquarkus.management.port=$MGMT_PORT"
    "-Dquarkus.banner.enabled=false"
    "-Dquarkus.log.console.format=%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] (%t) %s%e%n"
    # Confluent-style ids: the id returned by POST /subjects/{s}/versions is
    # the content id (one per distinct schema, shared across subjects), not
    # the per-version global id.
    "-Dapicurio.ccompat.legacy-id-mode.enabled=false"
    # Compare schemas by canonical form when registering and looking up, like
    # Confluent: whitespace / JSON key order do not create new versions, and
    # lookups (POST /subjects/{s}, auto.register.schemas=False) find them
    # (Apicurio issue 6972). Field order, types, defaults, logicalType still
    # make a new schema; doc, aliases and enum defaults do not.
    "-Dapicurio.ccompat.use-canonical-hash=true"
    "-Dapicurio.storage.snapshot.location=$DATA_DIR/snapshots"
  )
  case "$STORAGE" in
    kafkasql)
      props+=(
        "-Dapicurio.storage.kind=kafkasql"
        "-Dapicurio.kafkasql.bootstrap.servers=$HOST:$KAFKA_PORT"
        # The journal is the only copy of the schemas: never expire it,
        # whatever the broker's default retention is.
        "-Dapicurio.kafkasql.topic.retention.ms=-1"
        "-Dapicurio.kafkasql.topic.retention.bytes=-1"
        # Start-up polls the (normally empty) snapshots topic once for this
        # long; 5 s by default.
        "-Dapicurio.kafkasql.consumer.poll.timeout=1000"
      )
      ;;
    h2)
      props+=(
        "-Dapicurio.storage.kind=sql"
        "-Dapicurio.storage.sql.kind=h2"
        "-Dapicurio.datasource.url=jdbc:h2:file:$DATA_DIR/h2/registry"
        "-Dapicurio.datasource.jdbc.initial-size=2"
        "-Dapicurio.datasource.jdbc.min-size=2"
        "-Dapicurio.datasource.jdbc.max-size=20"
      )
      ;;
  esac
  printf '%s\n' "${props[@]}"
}

# Ready = the Confluent API answers and storage reports ready (kafkasql: the
# journal has been replayed, so every stored id resolves). Fast-jar builds
# (3.1+) serve health on the management port, the 3.0.x runner jar on the main one.
registry_ready() {
  local health_port=$PORT
  fast_jar && health_port=$MGMT_PORT
  [[ "$(http_status "$(service_addr "$PORT")/subjects")" == 200 \
     && "$(http_status "http://$HOST:$health_port/health/ready")" == 200 ]]
}

cmd_start() {
  already_running && return 0
  if [[ "$STORAGE" == kafkasql ]] && ! port_open "$KAFKA_PORT"; then
    die "storage is kafkasql but no Kafka broker answers on $HOST:$KAFKA_PORT; start it first (infra/kafka.sh start), or set METERFLOW_REGISTRY_STORAGE=h2"
  fi
  fetch_complete || cmd_fetch
  require_registry_java
  local ports=("$PORT")
  fast_jar && ports+=("$MGMT_PORT")   # only fast-jar builds open the management port
  ensure_ports_free "METERFLOW_REGISTRY_PORT / METERFLOW_REGISTRY_MGMT_PORT" "${ports[@]}"
  mkdir -p "$DATA_DIR" "$LOGS_DIR" "$RUN_DIR"

  local pid jar props=() extra=()
  jar="$(launcher_jar)"
  mapfile -t props < <(registry_props)
  # Word-split the extra options on purpose (like JAVA_OPTS everywhere).
  # shellcheck disable=SC2206
  [[ -n "$EXTRA_JAVA_OPTS" ]] && extra=($EXTRA_JAVA_OPTS)
  # cwd is the data dir: nothing lands in the caller's cwd.
  launch "Apicurio Registry $APICURIO_VERSION ($STORAGE storage) on $(service_addr "$PORT")" "$DATA_DIR" \
    "$JAVA" "-Xmx$HEAP" -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
      "${props[@]}" ${extra[@]+"${extra[@]}"} -jar "$jar"
  await_ready ", $STORAGE storage" 0.25 registry_ready
}

# ----------------------------------------------------------------------------- reset

# Deletes the kafkasql topics with the Kafka admin client bundled in the
# registry (a single-file Java program; needs a JDK, not just a JRE).
delete_kafkasql_topics() {
  port_open "$KAFKA_PORT" \
    || die "the schemas live in Kafka topics ($KAFKASQL_TOPICS) and no broker answers on $HOST:$KAFKA_PORT; start it (infra/kafka.sh start) and retry, or wipe everything with infra/kafka.sh reset"
  fetch_complete || cmd_fetch
  require_registry_java
  local cp src tmp kc sl
  kc="$(first_match "$APP_DIR"/lib/*kafka-clients-*.jar "$APP_DIR"/lib/main/*kafka-clients-*.jar)" \
    || die "no kafka-clients jar in $APP_DIR/lib"
  sl="$(first_match "$APP_DIR"/lib/*slf4j-api-*.jar "$APP_DIR"/lib/main/*slf4j-api-*.jar || true)"
  cp="$kc${sl:+:$sl}"
  tmp="$(mktemp -d)"
  src="$tmp/DeleteTopics.java"
  cat >"$src" <<'JAVA'
import java.util.*;
import org.apache.kafka.clients.admin.*;

public class DeleteTopics {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("default.api.timeout.ms", "30000");
        try (Admin admin = Admin.create(p)) {
            Set<String> existing = admin.listTopics().names().get();
            List<String> doomed = new ArrayList<>();
            for (int i = 1; i < args.length; i++) if (existing.contains(args[i])) doomed.add(args[i]);
            if (!doomed.isEmpty()) admin.deleteTopics(doomed).all().get();
            // Deletion completes asynchronously; wait until the topics are gone so
            // that a following start re-creates them instead of reusing dying ones.
            long deadline = System.currentTimeMillis() + 30000;
            while (!Collections.disjoint(admin.listTopics().names().get(), doomed)) {
                if (System.currentTimeMillis() > deadline) throw new IllegalStateException("topics still present: " + doomed);
                Thread.sleep(200);
            }
            System.out.println(doomed.isEmpty() ? "-" : String.join(" ", doomed));
        }
    }
}
JAVA
  local out rc=0
  # shellcheck disable=SC2086
  out="$("$JAVA" -Dorg.slf4j.simpleLogger.defaultLogLevel=off -cp "$cp" "$src" "$HOST:$KAFKA_PORT" $KAFKASQL_TOPICS 2>&1)" || rc=$?
  rm -rf "$tmp"
  if (( rc != 0 )); then
    printf '%s\n' "$out" | grep -v -i 'slf4j' >&2 || true
    die "could not delete the registry topics on $HOST:$KAFKA_PORT"
  fi
  out="$(printf '%s\n' "$out" | tail -n1)"
  if [[ "$out" == "-" ]]; then
    say "no registry topics on $HOST:$KAFKA_PORT"
  else
    say "deleted Kafka topics on $HOST:$KAFKA_PORT: $out"
  fi
}

cmd_reset() {
  cmd_stop
  if [[ "$STORAGE" == kafkasql ]]; then
    delete_kafkasql_topics
  fi
  remove_data
  say "all schemas forgotten; ids start again at 1, so records already in Kafka may now name unknown or different schemas"
}

# ----------------------------------------------------------------------------- main

check_port_value METERFLOW_REGISTRY_PORT "$PORT"
if [[ -z "$MGMT_PORT" ]]; then
  MGMT_PORT=$(( PORT + 919 ))
  (( MGMT_PORT < 65536 )) || MGMT_PORT=$(( PORT - 919 ))
fi
check_port_value METERFLOW_REGISTRY_MGMT_PORT "$MGMT_PORT"
check_port_value METERFLOW_KAFKA_PORT "$KAFKA_PORT"
[[ "$PORT" != "$MGMT_PORT" ]] || die "METERFLOW_REGISTRY_PORT and METERFLOW_REGISTRY_MGMT_PORT must differ"
check_start_timeout
[[ "$HEAP" =~ ^[0-9]+[kKmMgG]?$ ]] || die "METERFLOW_REGISTRY_HEAP must look like 256m, got '$HEAP'"
[[ "$STORAGE" == kafkasql || "$STORAGE" == h2 ]] || die "METERFLOW_REGISTRY_STORAGE must be kafkasql or h2, got '$STORAGE'"
[[ "$APICURIO_VERSION" =~ ^[0-9A-Za-z._-]+$ ]] || die "bad METERFLOW_REGISTRY_VERSION '$APICURIO_VERSION'"
dispatch "$@"
