#!/usr/bin/env bash
# A one-node SLURM on this machine, for testing attnbench's SLURM launcher (tests/test_slurm.py, docs/sweeps.md).
#
#   bash benchmarks/slurm/local_cluster.sh start    # write slurm.conf, start munged, slurmctld, slurmd; wait for idle
#   bash benchmarks/slurm/local_cluster.sh status   # the node's state, or "not running"
#   bash benchmarks/slurm/local_cluster.sh env      # the line to paste: export SLURM_CONF=...
#   bash benchmarks/slurm/local_cluster.sh stop     # stop only what `start` started (pid files)
#
# It installs nothing: without the binaries it says which packages to install (Debian/Ubuntu:
# apt-get install slurm-wlm munge) and exits 3. It runs as root (slurmd starts jobs as their user).
# Everything it writes lives in $ATTNBENCH_SLURM_DIR (default /tmp/attnbench-slurm): slurm.conf,
# gres.conf, state, spool, logs, and its own munged socket, so a system SLURM or munge is left alone.
#
# Choices, and why:
# - the node's CPUs and memory are what `slurmd -C` reads from this machine;
# - `gpu` GRES with no device behind it (File=/dev/null; a count-only gpu GRES makes the node INVAL), so
#   hydra/launcher=slurm_gpu's --gpus-per-node=1 line is scheduled as-is; jobs then run with device=cpu;
# - a job without --mem gets its CPUs' share of the memory (DefMemPerCPU), not the whole node;
# - no cgroups (proctrack/linuxproc, task/none): containers and CI machines rarely delegate them;
# - no slurmdbd: `sacct` fails, as on clusters without accounting; job states come from squeue;
# - AuthInfo cred_expire=10: SLURM holds a requeued job for cred_expire seconds before it may start
#   again (120 s by default), so a preemption test waits 10 s, not 2 minutes;
# - sched_interval=2, bf_interval=2: the scheduler looks at pending jobs every 2 s (60 s and 30 s by default).
set -euo pipefail

DIR=${ATTNBENCH_SLURM_DIR:-/tmp/attnbench-slurm}
CONF=$DIR/slurm.conf
PORT=${ATTNBENCH_SLURM_PORT:-6817}   # slurmctld; slurmd listens on PORT+1
GRACE_S=${ATTNBENCH_SLURM_GRACE_S:-20}   # the `grace` partition's GraceTime
export SLURM_CONF=$CONF
MUNGE_SOCKET=$DIR/munge/munge.socket.2

say() { echo "local_cluster: $*" >&2; }

need_binaries() {
  local missing=()
  for b in munged slurmctld slurmd sinfo sbatch squeue scontrol srun; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "missing ${missing[*]}: install them with 'apt-get install slurm-wlm munge' (Debian/Ubuntu, as root)"
    exit 3
  fi
  if [ "$(id -u)" != 0 ]; then
    say "must run as root (slurmd starts each job as its user); try: sudo bash $0 start"
    exit 3
  fi
}

quiet() { "$@" >/dev/null 2>&1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_idle() { sinfo -h -o '%t' 2>/dev/null | grep -qx 'idle'; }

write_conf() {
  local node host gpus mem
  host=$(hostname -s)
  # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
  node=$(PATH=/usr/sbin:$PATH slurmd -C | head -n 1)
  gpus=$(echo "$node" | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
  mem=$(echo "$node" | sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p')
  mkdir -p "$DIR"/{state,spool,log}
  cat >"$CONF" <<EOF
# Written by benchmarks/slurm/local_cluster.sh: a one-node test cluster (see that script for the choices).
ClusterName=attnbench-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / gpus))
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
GresTypes=gpu
$node NodeAddr=127.0.0.1 Gres=gpu:$gpus State=UNKNOWN
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=grace Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  # One placeholder "device" per CPU, so that as many 1-GPU jobs run at once as the CPUs allow.
  mkdir -p "$DIR/dev"
  for i in $(seq 0 $((gpus - 1))); do : >"$DIR/dev/gpu$i"; done
  echo "Name=gpu File=$DIR/dev/gpu[0-$((gpus - 1))]" >"$DIR/gres.conf"
}

start_munge() {
  mkdir -p "$DIR/munge"
  if [ ! -f "$DIR/munge/munge.key" ]; then
    if [ -f /etc/munge/munge.key ]; then
      cp /etc/munge/munge.key "$DIR/munge/munge.key"
    else  # the package normally creates one; a test cluster only needs its own
      dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
  fi
  chown -R munge:munge "$DIR/munge"   # munged refuses directories and keys it does not own
  chmod 755 "$DIR/munge"   # the socket must be reachable by every user
  chmod 400 "$DIR/munge/munge.key"
  if alive "$DIR/munge/munged.pid"; then return; fi
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local t=$1 what=$2
  shift 2
  for _ in $(seq $((t * 2))); do
    if "$@"; then return 0; fi
    sleep 0.5
  done
  say "$what did not happen within ${t}s; logs in $DIR/log"
  return 1
}

start() {
  need_binaries
  local before
  before=$(cat "$CONF" 2>/dev/null || true)
  write_conf
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && node_idle; then
    if [ "$before" = "$(cat "$CONF")" ]; then
      say "already running"; echo "export SLURM_CONF=$CONF"; return
    fi
    say "slurm.conf changed (an older checkout started this cluster): restarting it"
    stop_daemons
  fi
  start_munge
  wait_for 10 "munged start" test -S "$MUNGE_SOCKET"
  alive "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -c -f "$CONF"  # -c: a fresh queue, no jobs of an earlier start
  wait_for 30 "slurmctld start" quiet scontrol ping
  alive "$DIR/slurmd.pid" || /usr/sbin/slurmd -f "$CONF"
  wait_for 60 "node idle" node_idle
  say "up: $(sinfo -h -o '%N %t CPUs=%c mem=%mMB gres=%G')"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() {  # stop_daemons [munged]: slurmd and slurmctld (and munged when asked), by their pid files
  local pidfile pid
  for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" ${1:+"$DIR/munge/munged.pid"}; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    fi
    rm -f "$pidfile"
  done
}

stop() {
  stop_daemons munged
  say "stopped"
}

status() {
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    sinfo -h -o '%N %t CPUs=%c mem=%mMB gres=%G'
  else
    say "not running (start it with: bash $0 start)"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
