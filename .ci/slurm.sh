#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 for the services tests: munge + slurmctld + slurmd, generated
# slurm.conf, no cgroups (proctrack/linuxproc, task/none), no accounting. Usage: .ci/slurm.sh start|stop|status
# Needs root and Debian's slurm-wlm + munge (.ci/run installs them).
set -euo pipefail
RUN=${PEFT3D_SLURM_DIR:-/tmp/peft3d-slurm}
host=$(hostname -s)
case "${1:-}" in
start)
  mkdir -p "$RUN"/{ctld,slurmd,log} /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
  cpus=$(nproc); mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 512 ))
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=peft3d
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$RUN/ctld
SlurmdSpoolDir=$RUN/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  /usr/sbin/slurmctld -i
  /usr/sbin/slurmd
  for _ in $(seq 1 30); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && { echo "slurm up on $host"; exit 0; }
    sleep 1
  done
  echo "slurm did not come up; logs:" >&2; tail -n 20 "$RUN"/log/*.log >&2 || true; exit 1 ;;
stop)
  for pidf in "$RUN"/slurmd.pid "$RUN"/slurmctld.pid; do
    [ -s "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
  done
  echo "slurm stopped" ;;
status)
  sinfo && squeue ;;
*)
  echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
