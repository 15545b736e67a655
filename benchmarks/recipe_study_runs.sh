#!/usr/bin/env bash
# The training runs of the short-budget recipe study (README, "The short-budget recipe"):
# DRSAN-32s x2 on T91 + BSD200, 2000 steps, Set5 and Set14 validated every 250 steps, every
# checkpoint kept. Run from the repository root; RUNS is where the workdirs go. Each command
# resumes when rerun; then
#     python benchmarks/recipe_study.py $RUNS/*/ --output $RUNS/study.json
# prints the table.
set -e
RUNS=${RUNS:-runs/recipe}
COMMON=(--config configs/drsan32s.py
        --config.train_data=../shared/data/train/T91,../shared/data/train/BSD200
        --config.val_datasets=Set5,Set14 --config.num_train_steps=2000
        --config.eval_every_steps=250 --config.checkpoint_every_steps=250
        --config.log_every_steps=50 --config.keep_checkpoints=10)
BEST=(--config.lr_schedule=cosine --config.learning_rate=2e-3 --config.warmup_steps=100)

# A: the staircase at 1e-3, x0.6 every 500 steps (issue 14's quick check).
python train.py "${COMMON[@]}" --workdir $RUNS/A_step1e-3 \
    --config.learning_rate=1e-3 --config.lr_decay_rate=0.6 --config.lr_decay_steps=500
# B: warm-up and cosine from 2e-3, with the weight average (= configs/short_budget.py).
python train.py "${COMMON[@]}" --workdir $RUNS/B_cosine2e-3 "${BEST[@]}" --config.ema_decay=0.999
# C: B with the gradient clipped to global norm 0.5 (below A's logged norms, 0.53-1.09).
python train.py "${COMMON[@]}" --workdir $RUNS/C_clip "${BEST[@]}" --config.grad_clip_norm=0.5 \
    --config.ema_decay=0.999
# E: B with 32x32 patches in batches of 36 (the same LR pixels per step as 48x48 x 16).
python train.py "${COMMON[@]}" --workdir $RUNS/E_patch32 "${BEST[@]}" --config.patch_size=32 \
    --config.batch_size=36 --config.ema_decay=0.999
# P: the paper's recipe (constant 2e-4 at this budget), with the weight average.
python train.py "${COMMON[@]}" --workdir $RUNS/P_paper --config.ema_decay=0.999
