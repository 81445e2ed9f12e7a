#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try profiles/slurm-local (and run
# tests/test_slurm.py) without a real cluster. Debian/Ubuntu, run as root, no systemd needed:
# the daemons (munged, slurmctld, slurmd) run in the background, started and stopped here.
#
#   cluster/slurm.sh install   apt-get install slurm-wlm munge (Debian's package registry only)
#   cluster/slurm.sh start     write /etc/slurm/slurm.conf for this machine, start the daemons,
#                              wait until the node is idle (does nothing if it already is)
#   cluster/slurm.sh stop      stop the daemons this script started
#   cluster/slurm.sh status    the daemons and `sinfo`; exit 0 when the node takes jobs
#
# Every subcommand is idempotent. The cluster: one node (this host, `nproc` CPUs, `free -m`
# memory), one partition `debug` (the default), select/cons_tres with CR_Core_Memory (so
# --cpus-per-task and --mem are what a job gets scheduled with), no accounting storage (no
# slurmdbd: `sacct` has nothing, so status polling uses `squeue`, which sees a finished job
# for MinJobAge seconds), proctrack/linuxproc and task/none (no cgroups needed).
# Environment: SLURM_PARTITION (debug), SLURM_MIN_JOB_AGE (600), SLURM_WAIT (60 s to wait for
# the node to be idle).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE=/var/lib/slurm/slurmctld
SPOOL=/var/lib/slurm/slurmd
LOGS=/var/log/slurm
RUN=/run/slurm
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID="$MUNGE_RUN/munged.pid"
CTLD_PID="$RUN/slurmctld.pid"
SLURMD_PID="$RUN/slurmd.pid"
PARTITION="${SLURM_PARTITION:-debug}"
MIN_JOB_AGE="${SLURM_MIN_JOB_AGE:-600}"
WAIT="${SLURM_WAIT:-60}"

say() { echo "slurm.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (it writes $CONF and starts daemons)"; }

running() {  # running PIDFILE NAME: the pid file names a live process of that name
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1")"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null
}

do_install() {
    need_root
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null; then
        say "slurm-wlm and munge are installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q slurm-wlm munge
}

node_name() { hostname -s; }

write_conf() {
    local node cpus mem slurm_user tmp
    node="$(node_name)"
    cpus="$(nproc)"
    # free's total, less 5% for the OS and the daemons: slurmd refuses a node whose
    # RealMemory is above what it measures itself.
    mem="$(free -m | awk '/^Mem:/ {print int($2 * 0.95)}')"
    slurm_user=root
    id slurm >/dev/null 2>&1 && slurm_user=slurm
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
# Written by cluster/slurm.sh start: a one-node cluster on $node ($cpus CPUs, $mem MB).
ClusterName=local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=$slurm_user
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol this long (seconds): Snakemake's status
# polling with squeue (no accounting database) must see a job finish.
MinJobAge=$MIN_JOB_AGE
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mkdir -p "$CONF_DIR"
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        echo unchanged
        return
    fi
    install -m 0644 "$tmp" "$CONF"
    rm -f "$tmp"
    say "wrote $CONF ($cpus CPUs, $mem MB on node $node, partition $PARTITION)"
    echo changed
}

start_munge() {
    if running "$MUNGE_PID" munged; then
        return
    fi
    mkdir -p /etc/munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    if [ ! -s "$MUNGE_KEY" ]; then
        say "creating $MUNGE_KEY"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown -R munge:munge /etc/munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 0700 /etc/munge
    chmod 0400 "$MUNGE_KEY"
    chmod 0755 "$MUNGE_RUN"
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && { say "munged is running"; return; }
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

start() {
    need_root
    command -v slurmctld >/dev/null || die "SLURM is not installed: run '$0 install' first"
    local changed owner
    changed="$(write_conf)"

    owner="$(awk -F= '/^SlurmUser=/ {print $2}' "$CONF")"
    mkdir -p "$STATE" "$SPOOL" "$LOGS" "$RUN"
    chown "$owner:" "$STATE" "$LOGS"
    start_munge
    if [ "$changed" = changed ] && { running "$CTLD_PID" slurmctld || running "$SLURMD_PID" slurmd; }; then
        say "slurm.conf changed: restarting the SLURM daemons"
        stop_slurm
    fi
    if ! running "$CTLD_PID" slurmctld; then
        /usr/sbin/slurmctld -f "$CONF"
        say "started slurmctld"
    fi
    if ! running "$SLURMD_PID" slurmd; then
        /usr/sbin/slurmd -f "$CONF"
        say "started slurmd"
    fi
    wait_idle
}

node_state() { sinfo -h -N -n "$(node_name)" -o %T 2>/dev/null | head -1; }

wait_idle() {
    local state=""
    for _ in $(seq $((WAIT * 2))); do
        state="$(node_state)"
        case "$state" in
            idle|mixed|allocated|completing)
                say "node $(node_name) is $state; partition $PARTITION takes jobs"
                return 0 ;;
            drained|draining|down|down\*|drained\*)
                scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node $(node_name) is '${state:-not listed}' after ${WAIT}s (see $LOGS/slurmctld.log, $LOGS/slurmd.log)"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM the process the pid file names, wait for it to exit
    local pid
    running "$1" "$2" || { rm -f "$1"; return 0; }
    pid="$(cat "$1")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        say "$2 ($pid) did not exit on TERM: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
    say "stopped $2"
}

stop_slurm() {
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
}

stop() {
    need_root
    stop_slurm
    stop_pid "$MUNGE_PID" munged
}

status() {
    local ok=0 name pidfile
    for pair in "munged:$MUNGE_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        name="${pair%%:*}"; pidfile="${pair#*:}"
        if running "$pidfile" "$name"; then
            echo "$name: running (pid $(cat "$pidfile"))"
        else
            echo "$name: not running"; ok=1
        fi
    done
    if [ "$ok" = 0 ]; then
        sinfo || ok=1
        case "$(node_state)" in idle|mixed|allocated|completing) ;; *) ok=1 ;; esac
    fi
    return "$ok"
}

case "${1:-}" in
    install) do_install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
