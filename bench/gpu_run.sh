#!/usr/bin/env bash
# Run ON the GPU machine (the device tool), from the repository root.
#
#   bash bench/gpu_run.sh              stage: copy the carried .whl/carry*/ files into /tmp/w, nothing else
#   bash bench/gpu_run.sh ARGS...      stage, install what is complete into /tmp/site (once per machine),
#                                      lay fastnnp out as installed (kernels as fastnnp/kernels) in
#                                      /tmp/pkg, then python3 -m fastnnp.bench --output $OUT
#                                      --name ${RESULT%.json} --budget-s ... ARGS...
#
# The device calls, back to back (bash bench/gpu_prepare.sh fills .whl/ here first), at most two
# runs of <= 10 min (BUDGET_S), each also timing:
#   1. carry [".whl/carry1"]:  FASTNNP_COMMIT=<sha> RESULT=gpu_fastnnp.json bash bench/gpu_run.sh \
#        --backends fastnnp-triton fastnnp-triton-graph fastnnp-triton-exact fastnnp-triton-exact-graph \
#        fastnnp-triton-exact-tf32 fastnnp-triton-exact-tf32-graph fastnnp-torch-exact \
#        --systems droplet-100 water-1000 water-10000 water-100000
#      (the -tf32 rows: the radial-MLP kernels' tl.dot in TF32, checked at their own rtol 1e-2)
#      (TorchMD-Net cannot be installed yet: half of the warp wheel is here; ase, psutil, tqdm are)
#   2. carry [".whl/carry2"]:  FASTNNP_COMMIT=<sha> RESULT=gpu_vs_tmd.json bash bench/gpu_run.sh \
#        --systems droplet-100 water-1000 water-10000 water-100000
#      (warp reassembled from both halves, checked against its sha256, and torchmd-net installed:
#      every default row, TorchMD-Net's default and static-shape graph modes included)
# then here (matplotlib draws the plot): python3 -m fastnnp.bench --merge <files_at>/gpu_fastnnp.json \
#                <files_at>/gpu_vs_tmd.json --output bench/results --name gpu_h200
# and the achieved FLOP/s and bytes/s of its fastnnp-triton* rows against the H200's ceilings
# (bench/results/gpu_h200_achieved.{md,json}): python3 bench/work_model.py --achieved bench/results/gpu_h200.json
# Every row is checked against the reference row before it is timed (the bench's "check" column).
#
# Dry run here, without a GPU (the same script end to end: no wheels installed, the Triton rows
# under the CPU interpreter, tiny systems), e.g.
#   DRY_RUN=1 OUT=/tmp/dry bash bench/gpu_run.sh --model tensornet-64 --systems droplet-21 --repeats 3
#
# Pieces carried in earlier calls stay in /tmp/w while the machine is warm (calls back to back).
# The warp wheel is reassembled and checked against the sha256 of warp.manifest once every piece
# is there; if some are missing the run goes on without TorchMD-Net (its rows then fail, recorded).
# Environment:
#   OUT             output folder (the device tool sets it; default bench/results)
#   RESULT          JSON file name (default gpu_bench.json; the table ${RESULT%.json}.md, the plot .png when
#                   matplotlib is there); the log is ${RESULT%.json}.log beside it
#   FASTNNP_COMMIT  recorded as the commit when the copy has no .git
#   BUDGET_S        seconds the whole command may take (default 570, inside the tool's 600 s limit)
#   DRY_RUN         1: use the packages installed here and TRITON_INTERPRET=1 (the dry run above)
set -euo pipefail
start=$SECONDS
cd "$(dirname "$0")/.."
W=/tmp/w
SITE=/tmp/site
PKG=/tmp/pkg

mkdir -p "$W"
shopt -s nullglob
for f in .whl/carry*/*; do cp "$f" "$W/"; done
echo "staged in $W: $(cd "$W" && printf '%s ' *)"
[ $# -eq 0 ] && exit 0

install_wheels() {
    local wheels=()
    [ -d "$SITE/ase" ] || wheels+=("$W"/ase-*.whl)
    [ -d "$SITE/torchmdnet" ] || wheels+=("$W"/torchmd_net-*.whl)
    [ -d "$SITE/psutil" ] || wheels+=("$W"/psutil-*.whl)
    [ -d "$SITE/tqdm" ] || wheels+=("$W"/tqdm-*.whl)
    if [ ! -d "$SITE/warp" ] && [ -f "$W/warp.manifest" ]; then
        # shellcheck disable=SC1091
        . "$W/warp.manifest"  # WHEEL, SHA256, PIECES
        local parts missing=()
        read -ra parts <<< "$PIECES"
        for p in "${parts[@]}"; do [ -f "$W/$p" ] || missing+=("$p"); done
        if [ ${#missing[@]} -eq 0 ]; then
            (cd "$W" && cat "${parts[@]}" > "$WHEEL" && echo "$SHA256  $WHEEL" | sha256sum -c -)
            wheels+=("$W/$WHEEL")
        else
            echo "warp pieces missing: ${missing[*]} (carry them first): TorchMD-Net rows will fail" >&2
        fi
    fi
    if [ ${#wheels[@]} -gt 0 ]; then
        python3 -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
    fi
    echo "installed in $SITE: $(for d in ase torchmdnet warp psutil tqdm; do [ -d "$SITE/$d" ] && printf '%s ' "$d"; done)"
}

if [ "${DRY_RUN:-0}" = 1 ]; then
    export TRITON_INTERPRET=1
    echo "dry run: packages as installed here, Triton under the CPU interpreter"
else
    install_wheels
fi
# The package (kernels included, in fastnnp/kernels) runs from a copy outside the checkout.
rm -rf "$PKG" && mkdir -p "$PKG" && cp -r fastnnp "$PKG/"
export PYTHONPATH="$SITE:$PKG${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
out_dir=${OUT:-bench/results}
result=${RESULT:-gpu_bench.json}
mkdir -p "$out_dir" bench/results
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$out_dir/${result%.json}.log" || true
budget=$((${BUDGET_S:-570} - (SECONDS - start)))
set +e
python3 -m fastnnp.bench --output "$out_dir" --name "${result%.json}" --budget-s "$budget" "$@" 2>&1 \
    | tee -a "$out_dir/${result%.json}.log"
status=${PIPESTATUS[0]}
set -e
if [ "${DRY_RUN:-0}" != 1 ] && [ "$(realpath "$out_dir")" != "$(realpath bench/results)" ]; then
    for f in "$out_dir/${result%.json}".{json,md,png}; do
        if [ -f "$f" ]; then cp "$f" bench/results/; fi
    done
fi
exit "$status"
