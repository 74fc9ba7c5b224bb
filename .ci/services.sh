#!/usr/bin/env bash
# Services for the scale-out tests (tests/test_services.py), all on 127.0.0.1, started and stopped by .ci/run:
#   slurm    a one-node SLURM cluster (.ci/slurm.sh)
#   postgres PostgreSQL on port 54329, database peft3d, trust auth (Optuna RDB storage)
#   mlflow   an MLflow tracking server on port 5055 (needs MLFLOW=path/to/mlflow, default: mlflow on PATH)
# Usage: .ci/services.sh start|stop [slurm] [postgres] [mlflow]   (no names: all three). Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RUN=${PEFT3D_SERVICES_DIR:-/tmp/peft3d-services}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
action=${1:-}; shift || true
names=${*:-slurm postgres mlflow}
mkdir -p "$RUN"

start_postgres() {
  [ -n "$PGBIN" ] || { echo "postgres: not installed"; return 1; }
  mkdir -p "$RUN/pg" "$RUN/pglog" && chown postgres "$RUN/pg" "$RUN/pglog" && chmod 700 "$RUN/pg"
  [ -s "$RUN/pg/PG_VERSION" ] || su postgres -c "$PGBIN/initdb -D $RUN/pg -A trust -U postgres" >/dev/null || return 1
  su postgres -c "$PGBIN/pg_ctl -D $RUN/pg -l $RUN/pglog/pg.log -w -o '-p 54329 -k /tmp -c listen_addresses=127.0.0.1' start" \
    >/dev/null || { tail -n 20 "$RUN/pglog/pg.log"; return 1; }
  su postgres -c "$PGBIN/createdb -h 127.0.0.1 -p 54329 peft3d" 2>/dev/null || true  # exists already: fine
  echo "postgres up: postgresql://postgres@127.0.0.1:54329/peft3d"
}
stop_postgres() { [ -n "$PGBIN" ] && su postgres -c "$PGBIN/pg_ctl -D $RUN/pg -m fast stop" >/dev/null 2>&1; echo "postgres stopped"; }

start_mlflow() {
  local bin=${MLFLOW:-mlflow}
  mkdir -p "$RUN/mlflow"
  nohup "$bin" server --host 127.0.0.1 --port 5055 --workers 1 \
    --backend-store-uri "sqlite:///$RUN/mlflow/mlflow.db" --default-artifact-root "$RUN/mlflow/artifacts" \
    >"$RUN/mlflow.log" 2>&1 &
  echo $! >"$RUN/mlflow.pid"
  for _ in $(seq 1 60); do
    curl -fs http://127.0.0.1:5055/health >/dev/null 2>&1 && { echo "mlflow server up: http://127.0.0.1:5055"; return 0; }
    sleep 1
  done
  echo "mlflow server did not come up:"; tail -n 20 "$RUN/mlflow.log"; return 1
}
stop_mlflow() { [ -s "$RUN/mlflow.pid" ] && kill "$(cat "$RUN/mlflow.pid")" 2>/dev/null; echo "mlflow server stopped"; }

rc=0
for n in $names; do
  case "$action:$n" in
    start:slurm) "$here/slurm.sh" start || rc=1 ;;
    stop:slurm) "$here/slurm.sh" stop ;;
    start:postgres) start_postgres || rc=1 ;;
    stop:postgres) stop_postgres ;;
    start:mlflow) start_mlflow || rc=1 ;;
    stop:mlflow) stop_mlflow ;;
    *) echo "usage: $0 start|stop [slurm] [postgres] [mlflow]" >&2; exit 2 ;;
  esac
done
exit $rc
