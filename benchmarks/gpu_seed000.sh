#!/usr/bin/env bash
# Seed-000 scale on one GPU (issue 7 benchmark 3; issue 3 at 128 px): all 649 species at 128 px + the emoji sink,
# five K-class resnet18 teachers, mobilenet_v3_large students for 60 epochs: target-dampened (g = 7.8) over three
# seeds, plus a scratch CE student and K-class KD / DKD students, then the Table-2-style comparison and the ladder.
# Jobs of one stage run side by side on the one GPU (each with its own DataLoader workers). Every step is
# resumable: rerun the script and finished runs are skipped.
#
# Data: built on a CPU machine (the sprite tarball is 70 MB), packed without the decode caches:
#   stillroom data build sprites --size 128 --out D/id128
#   stillroom data build ood-emoji --size 128 --id-index D/id128 --out D/ood128
#   stillroom data merge-sink D/id128 D/ood128 --out D/merged128
#   tar czf .gpu/data128.tgz -C D --exclude=.cache --transform 's,^id128,id,;s,^ood128,ood,;s,^merged128,merged,' \
#       id128 ood128 merged128
# Then (on the GPU machine):  DATA_TAR=.gpu/data128.tgz bash benchmarks/gpu_seed000.sh
# STAGES picks steps (default: all); TEACHER_EPOCHS (20 in BENCHMARKS.md), STUDENT_EPOCHS, N_TEACHERS, TD_SEEDS,
# EXTRA ("ce kd dkd"), GAMMAS / GAMMA_EPOCHS (seed 000 Table 3: 35 epochs, seed 7) scale it down for a smoke run. RESULTS (default artifacts/seed000_649/results) receives the small result files.
set -euo pipefail
A=${A:-artifacts/seed000_649}
CFG=configs/seed000_649
STAGES=${STAGES:-"data teachers export students gsweep evaluate"}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-30}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-60}
N_TEACHERS=${N_TEACHERS:-5}
TD_SEEDS=${TD_SEEDS:-"7 25 121"}  # seed 000 §3.1's seeds
EXTRA=${EXTRA:-"ce kd dkd"}
GAMMAS=${GAMMAS:-"0 4 7.8 10"}
GAMMA_EPOCHS=${GAMMA_EPOCHS:-35}
RESULTS=${RESULTS:-$A/results}
SL=${SL:-stillroom}
mkdir -p "$A/runs" "$RESULTS"
LOG="$RESULTS/stages.log"
stamp() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
teachers=(); for ((i = 0; i < N_TEACHERS; i++)); do teachers+=("s649_teacher_resnet18_s$i"); done
stores() { local kind=$1 out="["; for t in "${teachers[@]}"; do out+="$A/stores_$kind/$t,"; done; echo "${out%,}]"; }
train() {  # train CONFIG NAME [--set ...]: skip a finished run, resume an interrupted one, log to RUN/stdout.txt
  local cfg=$1 name=$2; shift 2
  local run="$A/runs/$name"
  [ -f "$run/metrics.json" ] && return 0
  mkdir -p "$run"
  $SL train "$cfg" --out "$run" --resume --quiet --set name="$name" "$@" > "$A/runs/$name.stdout.txt" 2>&1
}
wait_all() { local rc=0; for pid in "$@"; do wait "$pid" || rc=1; done; return $rc; }

if has data; then
  stamp "data: unpack $DATA_TAR, build the decode caches"
  [ -f "$A/merged/index.json" ] || tar xzf "${DATA_TAR:?set DATA_TAR}" -C "$A"
  python3 -c "
import sys
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
for d in sys.argv[1:]:
    print(d, load_images(load_index(d)).shape)
" "$A/id" "$A/merged"
fi

if has teachers; then
  stamp "teachers: ${teachers[*]} ($TEACHER_EPOCHS epochs, side by side)"
  pids=()
  # one utilization sample mid-stage: is the GPU or the CPU-side augmentation the bottleneck?
  (sleep 120; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader && uptime) >> "$LOG" 2>&1 &
  for i in "${!teachers[@]}"; do
    train $CFG/teacher.yaml "${teachers[$i]}" --set data.index="$A/id" --set seed="$i" --set schedule.epochs="$TEACHER_EPOCHS" &
    pids+=($!)
  done
  wait_all "${pids[@]}"
  stamp "teachers done"
fi

if has export; then
  stamp "export: each teacher's logits on the ID and the merged index"
  for t in "${teachers[@]}"; do
    for kind in id merged; do
      [ -f "$A/stores_$kind/$t/manifest.json" ] || \
        $SL softlabels export --teacher "$A/runs/$t" --index "$A/$kind" --out "$A/stores_$kind/$t" \
          > /dev/null
    done
  done
  $SL score-teachers $(for t in "${teachers[@]}"; do echo "$A/runs/$t"; done) --split val \
    --out "$RESULTS/teacher_scores.json" > "$RESULTS/teacher_scores.txt" 2>&1 || true
  stamp "export done"
fi

if has students; then
  stamp "students: td seeds [$TD_SEEDS] + [$EXTRA] ($STUDENT_EPOCHS epochs, side by side)"
  pids=()
  for s in $TD_SEEDS; do
    train $CFG/student_td.yaml "s649_td_s$s" --set data.index="$A/merged" --set seed="$s" --set schedule.epochs="$STUDENT_EPOCHS" \
      --set "teachers.cached=$(stores merged)" &
    pids+=($!)
  done
  for e in $EXTRA; do
    case $e in
      ce) train $CFG/student_ce.yaml s649_ce_s7 --set data.index="$A/merged" --set schedule.epochs="$STUDENT_EPOCHS" & ;;
      kd) train $CFG/student_kd.yaml s649_kd_s7 --set data.index="$A/id" --set schedule.epochs="$STUDENT_EPOCHS" \
            --set "teachers.cached=$(stores id)" & ;;
      dkd) train $CFG/student_kd.yaml s649_dkd_s7 --set data.index="$A/id" --set schedule.epochs="$STUDENT_EPOCHS" \
            --set "teachers.cached=$(stores id)" --set loss.name=dkd --set "loss.params={multi_teacher: fused}" & ;;
      *) echo "unknown EXTRA student $e" >&2; exit 2 ;;
    esac
    pids+=($!)
  done
  wait_all "${pids[@]}"
  stamp "students done"
fi

if has gsweep; then
  stamp "Table 3: g in [$GAMMAS], $GAMMA_EPOCHS epochs, seed 7 (side by side)"
  pids=()
  for g in $GAMMAS; do
    train $CFG/student_td.yaml "s649_g${g}_e$GAMMA_EPOCHS" --set data.index="$A/merged" --set seed=7 \
      --set schedule.epochs="$GAMMA_EPOCHS" --set loss.params.ood_weight="$g" --set "teachers.cached=$(stores merged)" &
    pids+=($!)
  done
  wait_all "${pids[@]}"
  stamp "Table 3 done"
fi

if has evaluate; then
  stamp "evaluate: open-set metrics on test (ladder fitted on val), Table-2-style tables"
  for run in "$A"/runs/s649_*; do  # side by side: one evaluation is mostly CPU-side bookkeeping
    [ -d "$run" ] || continue
    name=$(basename "$run")
    case $name in
      *teacher*) continue ;;
      s649_kd_* | s649_dkd_*) ood=(--ood-index "$A/ood") ;;
      *) ood=() ;;
    esac
    [ -f "$run/metrics.json" ] || continue
    ($SL evaluate "$run" --split test --ood-split test "${ood[@]}" --ladder --no-tune-odin \
      > "$run/evaluate_stdout.txt" 2>&1 || echo "evaluate failed: $run" | tee -a "$LOG") &
  done
  wait
  td_runs=(); for s in $TD_SEEDS; do td_runs+=("$A/runs/s649_td_s$s"); done
  $SL ood-table "${td_runs[@]}" --markdown "$RESULTS/table2_td.md" > "$RESULTS/table2_td.txt" 2>&1 || true
  for g in $GAMMAS; do
    $SL ood-table "$A/runs/s649_g${g}_e$GAMMA_EPOCHS" --markdown "$RESULTS/table3_g$g.md" \
      > "$RESULTS/table3_g$g.txt" 2>&1 || true
  done
  python3 benchmarks/seed000_table.py "$A/runs" --out "$RESULTS/table_all.md"
  for e in $EXTRA; do
    $SL ood-table "$A/runs/s649_${e}_s7" --markdown "$RESULTS/table2_$e.md" > "$RESULTS/table2_$e.txt" 2>&1 || true
  done
  stamp "evaluate done"
fi

# the small files of every run (no weights) for the notes and BENCHMARKS.md
tar czf "$RESULTS/runs_small.tgz" --exclude='*.safetensors' --exclude='*.npy' --exclude='.cache' \
  -C "$A" runs $(cd "$A" && ls -d stores_*/*/manifest.json 2>/dev/null) 2>/dev/null || true
stamp "done"
