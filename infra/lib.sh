# shellcheck shell=bash
# infra/lib.sh — what infra/kafka.sh and infra/registry.sh share: environment
# defaults, messages, pid-file handling, launching a JVM in the background and
# waiting until it is ready, stop, status, reset, logs and the command line.
# Sourced (never run) by a script that has set -euo pipefail and set
#   SERVICE        name in messages and file names ("kafka", "registry")
#   NOUN           what the process is called in messages ("broker", "registry")
# and, after sourcing, defines
#   PORT           the port the service is reached on (METERFLOW_<SERVICE>_PORT)
#   SERVICE_LOGS   its log files, the one `logs` shows first, the JVM's
#                  stdout/stderr (where start-up banners go) last
#   is_ours <command line>   true for a JVM this script started for this METERFLOW_HOME
#   running_port <pid>       port the running service listens on
#   service_addr <port>      where it is reached, as messages show it
#   service_answers <port>   true when it answers requests
# and optionally
#   ADOPT_ORPHANS=1          adopt a live process of ours that has no pid file
#   KILL_NOTE                appended to the SIGKILL warning of `stop`
#   SILENT_NOTE              status text when up but not answering

# shellcheck disable=SC2034  # SCRIPT_DIR, LOGS_DIR: used by the sourcing scripts
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
readonly HOST=127.0.0.1
readonly STOP_TIMEOUT=30   # seconds

METERFLOW_HOME="${METERFLOW_HOME:-$HOME/.cache/meterflow}"
DATA_DIR="$METERFLOW_HOME/data/$SERVICE"
# shellcheck disable=SC2034
LOGS_DIR="$METERFLOW_HOME/logs"
RUN_DIR="$METERFLOW_HOME/run"
PID_FILE="$RUN_DIR/$SERVICE.pid"
ADOPT_ORPHANS=0
KILL_NOTE=
SILENT_NOTE="not answering (yet)"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

# ----------------------------------------------------------------------------- helpers

say() { printf '%s: %s\n' "$SERVICE" "$*"; }
err() { printf '%s: error: %s\n' "$SERVICE" "$*" >&2; }
die() { err "$@"; exit 1; }

now_ms() { date +%s%3N; }
elapsed() { # elapsed <start_ms> -> "12.3"
  local d=$(( $(now_ms) - $1 ))
  printf '%d.%d' $(( d / 1000 )) $(( (d % 1000) / 100 ))
}

# retry <tries> <pause> <command...>: until the command succeeds, at most <tries> times.
retry() {
  local n=$1 pause=$2
  shift 2
  until "$@"; do
    (( --n > 0 )) || return 1
    sleep "$pause"
  done
}

check_port_value() { # check_port_value <variable name> <value>
  if ! [[ "$2" =~ ^[0-9]+$ ]] || (( $2 < 1 || $2 > 65535 )); then
    die "$1 must be a TCP port number, got '$2'"
  fi
}

check_start_timeout() {
  [[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "METERFLOW_${SERVICE^^}_START_TIMEOUT must be a number of seconds"
}

# True when a TCP connect to HOST:$1 succeeds.
port_open() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# ensure_ports_free <variables to set instead> <port>...
ensure_ports_free() {
  local hint=$1 p
  shift
  for p in "$@"; do
    if port_open "$p"; then
      die "port $HOST:$p is already in use by another process (not started by $PID_FILE); set $hint"
    fi
  done
}

# require_java <minimum major version> <what needs it> [<hint>]
require_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install OpenJDK 17+ or set JAVA_HOME)"
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  v="${v%%.*}"
  [[ "$v" =~ ^[0-9]+$ ]] || die "cannot determine the version of '$JAVA'"
  (( v >= $1 )) || die "$2 needs Java $1+, '$JAVA' is Java $v${3:+ ($3)}"
}

# ----------------------------------------------------------------------------- fetch

# mvn_quiet <mvn args...>: Maven with its output kept out of the terminal
# unless it fails.
mvn_quiet() {
  local log rc=0
  log="$(mktemp)"
  mvn -q -B -Dstyle.color=never "$@" >"$log" 2>&1 || rc=$?
  (( rc == 0 )) || sed 's/\x1b\[[0-9;]*m//g' "$log" >&2
  rm -f "$log"
  return "$rc"
}

# fetch_into <dest dir> <fill function> <what> <what mvn is needed for>: fills
# a fresh directory next to <dest> with "<fill function> <dir>" (which reports
# its own errors) and only then puts it in place of <dest>.
fetch_into() {
  local dest=$1 fill=$2 tmp
  command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven is needed once to download $4)"
  say "fetching $3 from Maven Central into $dest ..."
  mkdir -p "$(dirname -- "$dest")"
  tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
  "$fill" "$tmp" || { rm -rf "$tmp"; exit 1; }
  rm -rf "$dest"
  mv "$tmp" "$dest"
}

# marker_matches <file> <first line>: the fetch that wrote <file> completed for this version.
marker_matches() { [[ -f "$1" && "$(head -n1 "$1")" == "$2" ]]; }
write_marker() { printf '%s\nfetched=%s\n' "$2" "$(date -u +%FT%TZ)" >"$1"; }

# ----------------------------------------------------------------------------- processes

# True while process $1 exists and is not a zombie waiting to be reaped.
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  [[ -n "$stat" && "$stat" != Z* ]]
}

pid_in_file() { tr -dc '0-9' <"$PID_FILE" 2>/dev/null || true; }

# Pid of a live process of ours found in the process table (no pid file needed).
find_orphan_pid() {
  local pid args
  while read -r pid args; do
    if is_ours "$args" && pid_alive "$pid"; then
      printf '%s\n' "$pid"
      return 0
    fi
  done < <(ps -ww -eo pid=,args= 2>/dev/null)
  return 1
}

# Pid of our service if the pid file points at a live process of ours, else
# nothing. A stale pid file (dead process, or pid reused by something else) is
# removed; with ADOPT_ORPHANS=1 a process of ours running without a pid file
# is adopted (pid file re-created).
running_pid() {
  local pid
  if [[ ! -f "$PID_FILE" ]]; then
    (( ADOPT_ORPHANS )) && pid="$(find_orphan_pid)" || return 1
    mkdir -p "$RUN_DIR"
    printf '%s\n' "$pid" >"$PID_FILE"
    say "found $NOUN pid $pid without a pid file; re-created $PID_FILE" >&2
    printf '%s\n' "$pid"
    return 0
  fi
  pid="$(pid_in_file)"
  if [[ -n "$pid" ]] && pid_alive "$pid" && is_ours "$(ps -ww -o args= -p "$pid" 2>/dev/null || true)"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$PID_FILE"
  say "removed stale pid file (pid ${pid:-?} is not a running $NOUN)" >&2
  return 1
}

# show_log_tail: the last lines each log got during this start attempt (older
# runs are not shown).
show_log_tail() {
  local i f new
  for i in "${!SERVICE_LOGS[@]}"; do
    f=${SERVICE_LOGS[i]}
    [[ -f "$f" ]] || continue
    new="$(tail -c "+$(( LOG_MARKS[i] + 1 ))" "$f" | grep -v '^[[:space:]]*$' | tail -n 40 || true)"
    [[ -n "$new" ]] && printf '\n---- last lines of %s ----\n%s\n' "$f" "$new" >&2
  done
  return 0
}

# ----------------------------------------------------------------------------- start

# If the service runs already, says so and succeeds.
already_running() {
  local pid rport
  pid="$(running_pid)" || return 1
  rport="$(running_port "$pid")"
  say "already running (pid $pid, $(service_addr "$rport"))"
  [[ "$rport" == "$PORT" ]] || say "note: it listens on $rport, not METERFLOW_${SERVICE^^}_PORT=$PORT; run '$0 restart' to apply"
  return 0
}

# launch <banner> <working dir> <command...>: starts the command in the
# background with its output appended to the last of SERVICE_LOGS, and sets
# pid. setsid: own session, so it survives the calling shell/terminal. The
# inner shell writes its own pid and then execs the command, so the pid file
# holds the JVM's pid. Also records where each log ends (LOG_MARKS) and when
# the start began (START_MS).
launch() {
  local banner=$1 dir=$2 console=${SERVICE_LOGS[-1]} f launcher
  shift 2
  START_MS=$(now_ms)
  LOG_MARKS=()
  for f in "${SERVICE_LOGS[@]}"; do
    LOG_MARKS+=("$(stat -c %s "$f" 2>/dev/null || echo 0)")
  done
  printf '\n==== %s starting %s ====\n' "$(date -u +%FT%TZ)" "$banner" >>"$console"
  # shellcheck disable=SC2016  # expanded by the inner bash
  launcher="$(cd "$dir" && { nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" "$@" \
                               >>"$console" 2>&1 </dev/null & echo $!; })"
  retry 50 0.1 test -s "$PID_FILE" || true
  pid="$(pid_in_file)"
  pid=${pid:-$launcher}
  printf '%s\n' "$pid" >"$PID_FILE"
}

# await_ready <note> <pause> <readiness command...>: waits up to START_TIMEOUT
# seconds for the launched process to pass the readiness command; if it exits
# or the time runs out, shows the logs and fails the script.
await_ready() {
  local note=$1 pause=$2 addr deadline
  shift 2
  addr="$(service_addr "$PORT")"
  say "starting (pid $pid$note), waiting up to ${START_TIMEOUT}s for $addr ..."
  deadline=$(( $(date +%s) + START_TIMEOUT ))
  while :; do
    if ! pid_alive "$pid"; then
      rm -f "$PID_FILE"
      err "$NOUN process exited during start-up"
      show_log_tail
      exit 1
    fi
    "$@" && break
    if (( $(date +%s) >= deadline )); then
      err "$NOUN not ready after ${START_TIMEOUT}s; stopping it (pid $pid)"
      show_log_tail
      cmd_stop >&2
      exit 1
    fi
    sleep "$pause"
  done
  say "up (pid $pid, $addr) — ready in $(elapsed "$START_MS")s; log: ${SERVICE_LOGS[0]}"
}

# ----------------------------------------------------------------------------- stop / status / reset / logs

# SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL and wait for the kernel to
# tear the JVM down, so that a following start does not find the port taken.
cmd_stop() {
  local pid t0
  if ! pid="$(running_pid)"; then
    say "not running"
    return 0
  fi
  t0=$(now_ms)
  say "stopping (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  if ! retry $(( STOP_TIMEOUT * 5 + 1 )) 0.2 not_alive "$pid"; then
    err "still running after ${STOP_TIMEOUT}s; sending SIGKILL$KILL_NOTE"
    kill -KILL "$pid" 2>/dev/null || true
    retry 50 0.2 not_alive "$pid" || die "pid $pid survived SIGKILL"
  fi
  rm -f "$PID_FILE"
  say "stopped in $(elapsed "$t0")s"
}
not_alive() { ! pid_alive "$1"; }

cmd_status() {
  local pid rport
  if pid="$(running_pid 2>/dev/null)"; then
    rport="$(running_port "$pid")"
    if service_answers "$rport"; then
      echo "$SERVICE: up (pid $pid, $(service_addr "$rport"))"
    else
      echo "$SERVICE: up (pid $pid, $(service_addr "$rport")) — $SILENT_NOTE"
    fi
    return 0
  fi
  echo "$SERVICE: down"
  return 3
}

# remove_data: deletes DATA_DIR, if there is one.
remove_data() {
  [[ "$DATA_DIR" == */data/"$SERVICE" ]] || die "refusing to delete unexpected data dir '$DATA_DIR'"
  [[ -e "$DATA_DIR" ]] || return 0
  rm -rf -- "$DATA_DIR"
  say "deleted $DATA_DIR"
}

cmd_logs() {
  echo "${SERVICE_LOGS[0]}"
  [[ -f "${SERVICE_LOGS[0]}" ]] && tail -n "${1:-50}" "${SERVICE_LOGS[0]}"
  return 0
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# dispatch <args...>: runs the subcommand named by the first argument.
dispatch() {
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
