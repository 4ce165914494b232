#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), once: fills the git-ignored .whl/ with the wheels the
# GPU machine lacks for python -m fastnnp.bench (see shared/notes/gpu-baseline.md):
#   warp-lang 1.19.0 (cp312, manylinux_2_28_x86_64, ~150 MB), ase 3.29.0, psutil, tqdm, and a
#   torchmd-net 3.1.0 wheel built from its sdist. (No matplotlib: the plot is drawn here, when
#   the GPU run's JSON is merged.)
# A device call carries at most 64 MiB of working tree, so the warp wheel is split into
# $PIECE-sized pieces (default 50M: 3 pieces) laid out one per folder:
#   .whl/carry1/  warp.part-aa + warp.manifest
#   .whl/carry2/  warp.part-ab + warp.manifest
#   .whl/carryN/  the last piece + warp.manifest + the ase, psutil, tqdm and torchmd-net wheels
# Carry .whl/carry1 .. carry(N-1) in calls that run `bash bench/gpu_run.sh` (staging only), then
# .whl/carryN in the call that benchmarks: `bash bench/gpu_run.sh ARGS...` (see gpu_run.sh).
#
#   bash bench/gpu_prepare.sh            # PIECE=40M bash bench/gpu_prepare.sh for smaller pieces
set -euo pipefail
cd "$(dirname "$0")/.."
PIECE=${PIECE:-50M}
WARP=warp_lang-1.19.0-py3-none-manylinux_2_28_x86_64.whl
DEST=.whl

git check-ignore -q "$DEST/" || { echo "$DEST/ is not git-ignored: refusing to fill it" >&2; exit 1; }
mkdir -p "$DEST"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform any -d "$DEST" warp-lang==1.19.0 ase==3.29.0 psutil tqdm
python3 -m pip download --no-deps --no-binary=:all: -d "$DEST/sdist" torchmd-net==3.1.0
python3 -m pip wheel --no-deps -w "$DEST" "$DEST/sdist/torchmd_net-3.1.0.tar.gz"
rm -rf "$DEST"/carry* "$DEST/pieces"

mkdir -p "$DEST/pieces"
split -b "$PIECE" "$DEST/$WARP" "$DEST/pieces/warp.part-"
pieces=()
for path in "$DEST"/pieces/warp.part-*; do pieces+=("$(basename "$path")"); done
manifest="WHEEL=$WARP
SHA256=$(sha256sum "$DEST/$WARP" | cut -d' ' -f1)
PIECES=\"${pieces[*]}\""
n=0
for piece in "${pieces[@]}"; do
    n=$((n + 1))
    mkdir -p "$DEST/carry$n"
    mv "$DEST/pieces/$piece" "$DEST/carry$n/"
    echo "$manifest" > "$DEST/carry$n/warp.manifest"
done
rmdir "$DEST/pieces"
cp "$DEST"/ase-3.29.0-py3-none-any.whl "$DEST"/psutil-*.whl "$DEST"/tqdm-*.whl "$DEST"/torchmd_net-3.1.0-*.whl \
    "$DEST/carry$n/"

tree_mib=$(git ls-files -z | du -ch --files0-from=- -B1M 2>/dev/null | tail -1 | cut -f1)
echo
echo "tracked working tree: ~${tree_mib} MiB (+ untracked files); each call carries at most 64 MiB in all"
du -sh "$DEST"/carry*
echo
for i in $(seq 1 $((n - 1))); do
    echo "device call $i: carry [\".whl/carry$i\"], command: bash bench/gpu_run.sh"
done
echo "device call $n: carry [\".whl/carry$n\"], command: FASTNNP_COMMIT=\$(git rev-parse HEAD) ... bash bench/gpu_run.sh ARGS"
echo "(back to back: the machine keeps /tmp/w only while it stays warm, ~30 s after a call)"
