#!/usr/bin/env bash
# A single-node Slurm cluster on localhost for tests/slurm.rs: munged, slurmctld and slurmd,
# configured in DIR (state, spool, logs, slurm.conf), on ports of their own.
#
#   cluster.sh install           apt-get install slurm-wlm and munge if sbatch is missing (root)
#   cluster.sh start DIR         starts the daemons; waits until the node takes jobs
#   cluster.sh stop DIR          stops what `start` started
#
# Afterwards point the Slurm commands at it with SLURM_CONF=DIR/slurm.conf.
set -euo pipefail
cmd=$1
case "$cmd" in
install)
  if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 || {
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    }
  fi
  ;;
start)
  dir=$2
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  node=itoflow-node
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
  cat > "$dir/slurm.conf" <<CONF
ClusterName=itoflow-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$node NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$dir/slurm.conf
  # munged: started here unless one already answers.
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged
    echo started > "$dir/munged.ours"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  slurmctld -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf" -N "$node"
  for _ in $(seq 300); do
    state=$(sinfo -h -n "$node" -o %t 2>/dev/null || true)
    case "$state" in idle|mix|alloc) exit 0 ;; esac
    sleep 0.2
  done
  echo "the Slurm node did not come up (state '$state'); logs in $dir/log" >&2
  tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  exit 1
  ;;
stop)
  dir=$2
  export SLURM_CONF=$dir/slurm.conf
  scontrol shutdown >/dev/null 2>&1 || true
  for f in slurmd slurmctld; do
    pid=$(cat "$dir/$f.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ -e "$dir/munged.ours" ]; then
    pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -f "$dir/munged.ours"
  fi
  ;;
*)
  echo "usage: cluster.sh install | start DIR | stop DIR" >&2
  exit 2
  ;;
esac
