#!/bin/sh
# A single-node Slurm cluster on 127.0.0.1 for tests, from Debian's slurm-wlm
# and munge, run as root without systemd (docs/scale.md, "Slurm").
#
#   tests/tools/slurm_cluster.sh start DIR   # prints SLURM_CONF=DIR/slurm.conf when the node is idle
#   tests/tools/slurm_cluster.sh stop DIR    # stops the daemons started in DIR (by their pid files)
#
# Everything lives in DIR: a generated munge key, munged's socket, slurm.conf,
# state, spool, logs and pid files. Ports are chosen free. `start` first stops
# whatever an earlier run left in DIR (by pid file), then waits until `sinfo`
# shows the node idle (at most SLURM_START_TIMEOUT seconds, default 60).
set -eu

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Stops the process whose pid is in $1 (if it is still running) and waits for it.
stop_pidfile() {
  [ -f "$1" ] || return 0
  pid=$(cat "$1" 2>/dev/null || true)
  rm -f "$1"
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  kill -0 "$pid" 2>/dev/null || return 0
  # A stale pid file may name a process that reused the pid: only stop one
  # whose command line names this directory.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
}

stop_all() {
  # slurmd first (it reports to slurmctld), munged last (both authenticate through it).
  stop_pidfile "$dir/run/slurmd.pid"
  stop_pidfile "$dir/run/slurmctld.pid"
  stop_pidfile "$dir/run/munged.pid"
}

# A free TCP port on 127.0.0.1 (the kernel picks one; nothing holds it after).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
  stop)
    [ -d "$dir" ] || exit 0
    stop_all
    exit 0
    ;;
  start) ;;
  *) usage ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "$0: slurmd must run as root (this is uid $(id -u))" >&2
  exit 1
fi
for prog in munged mungekey slurmctld slurmd sinfo sbatch python3; do
  command -v "$prog" >/dev/null 2>&1 || {
    echo "$0: '$prog' not found; install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)" >&2
    exit 1
  }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stop_all
rm -rf "$dir/munge" "$dir/run" "$dir/state" "$dir/spool" "$dir/log"
# munged refuses directories that others can write to.
mkdir -m 700 -p "$dir/munge" "$dir/run" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir"

mungekey --create --keyfile="$dir/munge/munge.key" --bits=1024 >/dev/null 2>&1 || {
  echo "$0: mungekey could not create $dir/munge/munge.key" >&2
  exit 1
}
chmod 400 "$dir/munge/munge.key"
munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
  --seed-file="$dir/munge/munged.seed" || {
  echo "$0: munged did not start; see $dir/log/munged.log" >&2
  exit 1
}

cpus=$(nproc)
# Slurm refuses a node that declares more memory than it has; leave some headroom.
mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

cat >"$dir/slurm.conf" <<EOF
# Written by tests/tools/slurm_cluster.sh: one node on 127.0.0.1, no accounting.
ClusterName=qforge-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

SLURM_CONF="$dir/slurm.conf"
export SLURM_CONF
# -D keeps each daemon in the foreground of its own background process; its
# pid file is written by the daemon itself.
slurmctld -D -i -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
slurmd -D -N localhost -f "$SLURM_CONF" >"$dir/log/slurmd.out" 2>&1 &

timeout=${SLURM_START_TIMEOUT:-60}
start=$(date +%s)
while :; do
  state=$(sinfo -h -N -n localhost -o '%T' 2>/dev/null || true)
  [ "$state" = idle ] && break
  if [ $(($(date +%s) - start)) -ge "$timeout" ]; then
    echo "$0: the node is not idle after ${timeout}s (state: '${state:-no answer}'); logs:" >&2
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" "$dir/log/slurmctld.out" "$dir/log/slurmd.out" >&2 2>/dev/null || true
    stop_all
    exit 1
  fi
  sleep 0.2
done
echo "SLURM_CONF=$SLURM_CONF"
