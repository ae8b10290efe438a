#!/bin/bash
# deploy/slurm/eval-array.sh: an evaluation split over a Slurm job array, then merged.
# Task I of the array runs shard I (optillm-eval --shard auto/N reads SLURM_ARRAY_TASK_ID and
# SLURM_ARRAY_TASK_MIN) into $OUT/shard-I; a second job, started only when every task succeeded,
# merges them:
#
#   export OPENAI_API_KEY=sk-...      # sbatch passes the environment on (--export=ALL)
#   jobid=$(sbatch --parsable deploy/slurm/eval-array.sh)
#   sbatch --dependency=afterok:"$jobid" --wrap "optillm-eval merge --out results/merged results/shard-*"
#
# Or run `deploy/slurm/eval-array.sh merge` by hand once the array is done. The settings below
# can be overridden from the environment (DATASET, APPROACHES, MODEL, OUT, CONCURRENCY).
# A task that is requeued or re-run continues where it stopped (--resume).
#SBATCH --job-name=optillm-eval
#SBATCH --array=0-3
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --time=04:00:00
#SBATCH --output=optillm-eval-%A_%a.log
set -eu
DATASET=${DATASET:-/usr/local/share/optillm/datasets/arithmetic.jsonl}
APPROACHES=${APPROACHES:-none,self_consistency,moa}
MODEL=${MODEL:-gpt-4o-mini}
OUT=${OUT:-results}
CONCURRENCY=${CONCURRENCY:-8}

if [ "${1:-}" = merge ]; then
    exec optillm-eval merge --out "$OUT/merged" "$OUT"/shard-*
fi
: "${SLURM_ARRAY_TASK_ID:?run this with sbatch (a job array), or with the argument merge}"
# Tasks in the array: SLURM_ARRAY_TASK_COUNT (Slurm 20.02+), else from the --array range.
N=${SLURM_ARRAY_TASK_COUNT:-$((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1))}
exec optillm-eval --dataset "$DATASET" --approaches "$APPROACHES" --model "$MODEL" \
    --concurrency "$CONCURRENCY" --shard "auto/$N" --resume --progress lines \
    --out "$OUT/shard-$SLURM_ARRAY_TASK_ID"
