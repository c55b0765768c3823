#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for testing profiles/slurm.
#
#   tests/slurm/local_cluster.sh start    # install (apt) if needed, configure, start, wait for idle node
#   tests/slurm/local_cluster.sh status   # daemons + sinfo
#   tests/slurm/local_cluster.sh stop     # stop daemons by pid, restore /etc/slurm
#
# Needs root on Debian/Ubuntu. Partitions: `cpu` (default) and `gpu`; the node has two fake
# GPUs (gres.conf points them at /dev/null and /dev/zero). No accounting daemon: job status
# comes from squeue, which keeps finished jobs for MinJobAge seconds.
#
# Everything (state, spool, logs, pid files, munge key and socket) lives in one directory,
# $DECONFLOW_SLURM_DIR (default: a fresh mktemp directory, remembered in $POINTER_FILE so
# that `stop` finds it). The only files written outside it are the ones SLURM reads from
# fixed paths: /etc/slurm/slurm.conf and /etc/slurm/gres.conf. Pre-existing versions are
# moved to <file>.deconflow-backup on start and put back on stop.
#
# Environment:
#   DECONFLOW_SLURM_DIR        working directory (created if missing, kept on stop; an
#                              auto-created one is removed on stop unless DECONFLOW_SLURM_KEEP=1)
#   DECONFLOW_SLURM_NODE_CPUS  CPUs the node advertises (default: nproc)
#   DECONFLOW_SLURM_NODE_MEM_MB RealMemory the node advertises (default: 90% of MemTotal)
#   DECONFLOW_SLURM_TIMEOUT    seconds to wait for the node to become idle / daemons to exit (60)
#   DECONFLOW_SLURM_NO_INSTALL set to 1 to fail instead of running apt-get
#
# The advertised CPUs/memory may exceed the machine (SlurmdParameters=config_overrides), so
# that a production-sized profile can be scheduled on a small CI runner; jobs then simply
# share the real cores.
set -euo pipefail

SLURM_ETC=/etc/slurm
POINTER_FILE=/tmp/deconflow-local-slurm.dir
TIMEOUT="${DECONFLOW_SLURM_TIMEOUT:-60}"
MANAGED_FILES=(slurm.conf gres.conf)
MARKER="# written by deconflow tests/slurm/local_cluster.sh"

log() { printf '[local_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, writes /etc/slurm)"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ "${DECONFLOW_SLURM_NO_INSTALL:-0}" == 1 ]] && die "missing: ${missing[*]} (install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get (not Debian-like?)"
    log "installing slurm-wlm munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d keeps the packages' init scripts from starting system daemons.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
    return 0
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# Stop one daemon by its pid file: TERM, wait (bounded), then KILL.
stop_daemon() {
    local name=$1 pidfile=$2 pid waited=0
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if pid_alive "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        while pid_alive "$pid" && (( waited < TIMEOUT * 5 )); do sleep 0.2; waited=$((waited + 1)); done
        if pid_alive "$pid"; then
            log "$name did not exit after ${TIMEOUT}s, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$pidfile"
}

restore_etc() {
    local f
    for f in "${MANAGED_FILES[@]}"; do
        if [[ -f "$SLURM_ETC/$f" ]] && grep -qF "$MARKER" "$SLURM_ETC/$f"; then
            rm -f "$SLURM_ETC/$f"
        fi
        if [[ -f "$SLURM_ETC/$f.deconflow-backup" ]]; then
            mv -f "$SLURM_ETC/$f.deconflow-backup" "$SLURM_ETC/$f"
        fi
    done
}

# The state directory of a running (or stale) cluster: env var, pointer file, or the
# comment in a slurm.conf we wrote.
find_state_dir() {
    local dir="${DECONFLOW_SLURM_DIR:-}"
    [[ -z $dir && -f $POINTER_FILE ]] && dir=$(cat "$POINTER_FILE")
    if [[ -z $dir && -f $SLURM_ETC/slurm.conf ]] && grep -qF "$MARKER" "$SLURM_ETC/slurm.conf"; then
        dir=$(sed -n 's/^# state directory: //p' "$SLURM_ETC/slurm.conf")
    fi
    echo "$dir"
}

cmd_stop() {
    local dir
    dir=$(find_state_dir)
    if [[ -n $dir && -d $dir ]]; then
        # Cancel leftover jobs first so slurmd does not keep job steps around.
        if [[ -f $dir/run/slurmctld.pid ]] && pid_alive "$(cat "$dir/run/slurmctld.pid")"; then
            timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
        fi
        stop_daemon slurmd "$dir/run/slurmd.pid"
        stop_daemon slurmctld "$dir/run/slurmctld.pid"
        stop_daemon munged "$dir/run/munged.pid"
    fi
    restore_etc
    rm -f "$POINTER_FILE"
    if [[ -n $dir && -f $dir/.auto-created && "${DECONFLOW_SLURM_KEEP:-0}" != 1 ]]; then
        rm -rf "$dir"
        log "stopped (removed $dir)"
    else
        log "stopped${dir:+ (state kept in $dir)}"
    fi
}

write_config() {
    local dir=$1 host cpus mem_mb
    host=$(hostname -s)
    cpus="${DECONFLOW_SLURM_NODE_CPUS:-$(nproc)}"
    mem_mb="${DECONFLOW_SLURM_NODE_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}"
    mkdir -p "$SLURM_ETC"
    local f
    for f in "${MANAGED_FILES[@]}"; do
        if [[ -f "$SLURM_ETC/$f" ]] && ! grep -qF "$MARKER" "$SLURM_ETC/$f" \
            && [[ ! -e "$SLURM_ETC/$f.deconflow-backup" ]]; then
            log "backing up existing $SLURM_ETC/$f"
            mv "$SLURM_ETC/$f" "$SLURM_ETC/$f.deconflow-backup"
        fi
    done
    cat >"$SLURM_ETC/slurm.conf" <<EOF
$MARKER
# state directory: $dir
ClusterName=deconflow-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket.2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups inside containers.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
# No slurmdbd: squeue answers job status as long as finished jobs are kept (MinJobAge).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
GresTypes=gpu
DefMemPerCPU=1024
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
    cat >"$SLURM_ETC/gres.conf" <<EOF
$MARKER
# Two fake GPUs: SLURM only needs distinct device files to count and bind them.
NodeName=$host Name=gpu File=/dev/null
NodeName=$host Name=gpu File=/dev/zero
EOF
}

wait_until() {  # wait_until <seconds> <description> <command...>
    local limit=$1 what=$2; shift 2
    local start=$SECONDS
    until "$@" >/dev/null 2>&1; do
        (( SECONDS - start >= limit )) && return 1
        sleep 1
    done
    log "$what after $((SECONDS - start))s"
}

node_idle() {
    local state
    state=$(timeout 10 sinfo --noheader --nodes="$(hostname -s)" --format=%t 2>/dev/null | sort -u | head -1)
    [[ $state == idle ]]
}

cmd_start() {
    require_root
    install_packages
    # A daemon from an earlier run (or a crashed test) is stopped first.
    cmd_stop 2>/dev/null || true

    local dir="${DECONFLOW_SLURM_DIR:-}"
    if [[ -z $dir ]]; then
        dir=$(mktemp -d /tmp/deconflow-slurm.XXXXXX)
        touch "$dir/.auto-created"
    fi
    mkdir -p "$dir"/{state,spool,log,run,munge}
    chmod 700 "$dir" "$dir/munge"
    dir=$(cd "$dir" && pwd)
    echo "$dir" >"$POINTER_FILE"
    # Whatever fails from here on, leave no daemon behind.
    trap 'log "start failed; cleaning up"; cmd_stop' EXIT

    # munge: own key, socket and pid file in $dir (AuthInfo=socket=... points SLURM there).
    if [[ ! -s $dir/munge/munge.key ]]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$dir/munge/munge.key"
    munged --force \
        --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket.2" \
        --pid-file="$dir/run/munged.pid" \
        --seed-file="$dir/munge/munged.seed" \
        --log-file="$dir/log/munged.log" \
        || die "munged failed to start; see $dir/log/munged.log"
    wait_until "$TIMEOUT" "munged up" munge -n --socket="$dir/munge/munge.socket.2" \
        || die "munged not answering; see $dir/log/munged.log"

    write_config "$dir"

    # Both daemons daemonize themselves and write their pid files (paths in slurm.conf).
    # -i: ignore errors from stale state files of an earlier run.
    slurmctld -i || die "slurmctld failed to start; see $dir/log/slurmctld.log"
    wait_until "$TIMEOUT" "slurmctld answering" timeout 10 scontrol ping \
        || { tail -20 "$dir/log/slurmctld.log" >&2; die "slurmctld did not answer within ${TIMEOUT}s"; }
    slurmd || die "slurmd failed to start; see $dir/log/slurmd.log"
    if ! wait_until "$TIMEOUT" "node $(hostname -s) idle" node_idle; then
        # A node left DOWN/DRAINED by an earlier run can be resumed once.
        timeout 10 scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
        wait_until 15 "node $(hostname -s) idle after resume" node_idle || {
            timeout 10 sinfo -N -l >&2 || true
            tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
            die "node did not become idle within ${TIMEOUT}s"
        }
    fi
    trap - EXIT
    log "cluster up; state in $dir"
    echo "$dir"
}

cmd_status() {
    local dir rc=0 name
    dir=$(find_state_dir)
    [[ -n $dir ]] || { echo "not running (no state directory)"; return 3; }
    echo "state directory: $dir"
    for name in munged slurmctld slurmd; do
        local pid=""
        [[ -f $dir/run/$name.pid ]] && pid=$(cat "$dir/run/$name.pid")
        if pid_alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: not running"; rc=3; fi
    done
    timeout 10 sinfo || rc=3
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
