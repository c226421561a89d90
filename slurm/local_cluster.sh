#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying the sbatch scripts and for `make test-slurm`.
#
#   slurm/local_cluster.sh start    # installs slurm-wlm and munge with apt-get when missing (root),
#                                   # writes slurm.conf for this host, starts munged, slurmctld, slurmd,
#                                   # waits until sinfo shows the node idle
#   eval "$(slurm/local_cluster.sh env)"   # SLURM_CONF for sbatch/squeue/scancel in this shell
#   slurm/local_cluster.sh status
#   slurm/local_cluster.sh stop     # stops exactly the daemons `start` started (their pid files)
#
# Everything lives in SSL_BENTHIC_SLURM_DIR (default /tmp/ssl-benthic-slurm): slurm.conf, the munge
# socket and key use, the daemons' pid files, logs and state. Nothing under /etc is changed. The node
# has the CPUs of `nproc`, the memory of /proc/meminfo, no GPUs; requeued jobs wait only a few seconds.
# Ports: SSL_BENTHIC_SLURM_PORT (slurmctld, default 6817) and the next one (slurmd).
set -euo pipefail

DIR=${SSL_BENTHIC_SLURM_DIR:-/tmp/ssl-benthic-slurm}
PORT=${SSL_BENTHIC_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)

die() { echo "local_cluster: $*" >&2; exit 1; }

install_missing() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [[ $(id -u) -eq 0 ]] || die "slurm-wlm and munge are missing: install them (apt-get install slurm-wlm munge)"
  echo "local_cluster: installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  local cpus mem
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc heeds OMP_NUM_THREADS
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$DIR"/{state,spool,munge,log}
  cat > "$CONF" <<EOF
# written by slurm/local_cluster.sh: a one-node test cluster on $NODE
ClusterName=sslbenthic
SlurmctldHost=$NODE
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
# a requeued job becomes eligible again at once (the default waits minutes), and the scheduler
# looks at the queue every few seconds: tests of preemption and requeue finish in seconds
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=600
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_missing
  if alive "$DIR/slurmctld.pid"; then
    echo "local_cluster: already running (SLURM_CONF=$CONF)"
    return
  fi
  write_conf
  export SLURM_CONF=$CONF
  if ! alive "$DIR/munged.pid"; then
    munged --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munged.pid" \
      --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force
  fi
  slurmctld -c -i
  slurmd
  local i
  for i in $(seq 1 60); do
    if [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; then
      echo "local_cluster: node $NODE idle ($(sinfo -h -o %c) CPUs); export SLURM_CONF=$CONF"
      return
    fi
    sleep 1
  done
  die "the node never became idle: see $DIR/log/"
}

stop() {
  local name pid i
  for name in slurmd slurmctld munged; do
    alive "$DIR/$name.pid" || continue
    pid=$(cat "$DIR/$name.pid")
    kill "$pid"
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$DIR/$name.pid"
  done
  echo "local_cluster: stopped"
}

status() {
  local name up=0
  for name in munged slurmctld slurmd; do
    if alive "$DIR/$name.pid"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; up=1
    else echo "$name: stopped"; fi
  done
  if [[ $up -eq 1 ]]; then SLURM_CONF=$CONF sinfo -N; fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) die "usage: $0 start|stop|status|env" ;;
esac
