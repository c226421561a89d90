# Shared by the sbatch scripts (sourced, never run): the Python to run, the accelerator, the trainer's
# process layout from the allocation, and the requeue of an interrupted run.
#
# Accelerator: the allocation decides. A job with GPUs (--gpus-per-node=N, N = --ntasks-per-node:
# one task per GPU) trains on them; a job without GPUs trains on CPU (DDP over gloo). So on a CPU
# partition the one change is `--gpus-per-node=0` (plus CPU-sized tasks), e.g.
#   sbatch --gpus-per-node=0 --ntasks-per-node=2 --cpus-per-task=4 --mem=16G slurm/pretrain.sbatch CONFIG
# SSL_BENTHIC_ACCELERATOR=cpu|gpu forces one (the scripts pass it as trainer.accelerator).
#
# Python: SSL_BENTHIC_PYTHON (default: the repository's .venv/bin/python). The repository is
# SSL_BENTHIC_REPO (default: the folder sbatch was called from, SLURM_SUBMIT_DIR). sbatch passes the
# caller's environment to the job (--export=ALL), so these can be set in the submitting shell.
#
# Interruption: `ssl-benthic pretrain`, `hml-finetune train` and `compare` exit 143 after saving
# last.ckpt on SIGTERM (preemption, scancel --signal=TERM, or --signal=TERM@N before the time limit),
# and say so in a file on the first node ($SSL_BENTHIC_INTERRUPTED; task 0 runs there). The batch
# shell then requeues the job (same job id, same run folder) and the requeued job resumes with
# --resume last. Any other failure (a bad config: 2, a bug: 1) ends the job, not requeued, with the
# status of the task that failed first (it writes it to $SSL_BENTHIC_FAILED): srun's own status is
# the highest of its tasks', 143 for a peer that srun killed after the first failure.

SSL_BENTHIC_REPO=${SSL_BENTHIC_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
SSL_BENTHIC_PYTHON=${SSL_BENTHIC_PYTHON:-$SSL_BENTHIC_REPO/.venv/bin/python}

ssl_benthic_fail() {  # a setup error: say it, exit 2 (not requeued)
  echo "error: $*" >&2
  exit 2
}

ssl_benthic_setup() {
  # TRAINER_ARGS: the trainer.* overrides that match the allocation
  [[ -x $SSL_BENTHIC_PYTHON ]] || ssl_benthic_fail "no Python at $SSL_BENTHIC_PYTHON: set SSL_BENTHIC_PYTHON"
  local tasks=${SLURM_NTASKS_PER_NODE:-1} gpus=${SLURM_GPUS_ON_NODE:-0}
  tasks=${tasks%%(*}  # "2(x3)" on a multi-node job: tasks per node
  local accelerator=${SSL_BENTHIC_ACCELERATOR:-}
  if [[ -z $accelerator ]]; then
    if [[ $gpus -gt 0 ]]; then accelerator=gpu; else accelerator=cpu; fi
  fi
  case $accelerator in
    cpu) ;;
    gpu)
      [[ $gpus -eq $tasks ]] || ssl_benthic_fail "the job has $gpus GPUs and $tasks tasks per node: " \
        "ask for one task per GPU (--ntasks-per-node=N --gpus-per-node=N)"
      ;;
    *) ssl_benthic_fail "SSL_BENTHIC_ACCELERATOR=$accelerator: use cpu or gpu" ;;
  esac
  TRAINER_ARGS=(
    "trainer.accelerator=$accelerator"
    trainer.strategy=ddp
    "trainer.devices=$tasks"
    "trainer.num_nodes=${SLURM_JOB_NUM_NODES:-1}"
  )
  export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
  export NCCL_ASYNC_ERROR_HANDLING=1
  echo "[slurm] job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?}:" \
    "$accelerator, ${SLURM_JOB_NUM_NODES:-1} node(s) x $tasks task(s), python $SSL_BENTHIC_PYTHON"
}

ssl_benthic_resume_args() {  # "--resume last" when RUN_DIR holds a checkpoint
  if compgen -G "$1/checkpoints/*.ckpt" >/dev/null; then echo "--resume last"; fi
}

ssl_benthic_srun() {
  # srun "$@" on every task; requeue the job when the run stopped on SIGTERM after saving (it then
  # creates $SSL_BENTHIC_INTERRUPTED: srun's status 143 alone may be that of a peer task srun killed
  # after another failed), or when a SIGTERM reached this shell (preemption); exit with the status
  local terminated=0 status
  export SSL_BENTHIC_INTERRUPTED=${TMPDIR:-/tmp}/ssl-benthic-interrupted-${SLURM_JOB_ID}
  export SSL_BENTHIC_FAILED=${TMPDIR:-/tmp}/ssl-benthic-failed-${SLURM_JOB_ID}
  rm -f "$SSL_BENTHIC_INTERRUPTED" "$SSL_BENTHIC_FAILED"
  trap 'terminated=1' TERM
  srun --kill-on-bad-exit=1 "$@" &
  local pid=$!
  while true; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break  # a trapped SIGTERM ends `wait` early: wait again
  done
  trap - TERM
  if [[ -e $SSL_BENTHIC_INTERRUPTED || ($terminated -eq 1 && $status -ne 0) ]]; then
    rm -f "$SSL_BENTHIC_INTERRUPTED"
    echo "[slurm] interrupted (status $status) at $(date +%FT%T): requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID" || echo "[slurm] scontrol requeue failed (already requeued by SLURM?)"
  elif [[ $status -ne 0 && -s $SSL_BENTHIC_FAILED ]]; then
    status=$(<"$SSL_BENTHIC_FAILED")  # the first failure's own status
  fi
  rm -f "$SSL_BENTHIC_FAILED"
  exit "$status"
}
