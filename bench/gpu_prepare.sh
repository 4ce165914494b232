#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), once: fills the git-ignored .whl/ with the wheels the
# GPU machine lacks for python -m fastnnp.bench (see shared/notes/gpu-baseline.md):
#   warp-lang 1.19.0 (cp312, manylinux_2_28_x86_64, ~150 MB), ase 3.29.0, psutil, tqdm, and a
#   torchmd-net 3.1.0 wheel built from its sdist. (No matplotlib: the plot is drawn here, when
#   the GPU run's JSON is merged.)
# The warp wheel is repacked without bin/warp-clang.so (Warp's CPU JIT, 69 MB: Warp loads it only
# when present, and the GPU rows do not use it) and with its native library LZMA-compressed. A device call carries at most 64 MiB of
# working tree, so that wheel is split into two pieces of $PIECE (default: half the wheel, rounded
# up to a MiB), laid out one per folder:
#   .whl/carry1/  warp.part-aa + warp.manifest + the ase, psutil and tqdm wheels
#   .whl/carry2/  warp.part-ab + warp.manifest + the torchmd-net wheel
# Both device calls benchmark (see gpu_run.sh): the first the fastnnp rows alone (TorchMD-Net
# cannot be installed yet), the second everything, TorchMD-Net included.
#
#   bash bench/gpu_prepare.sh            # PIECE=40M bash bench/gpu_prepare.sh for smaller pieces
set -euo pipefail
cd "$(dirname "$0")/.."
WARP=warp_lang-1.19.0-py3-none-manylinux_2_28_x86_64.whl
DEST=.whl

git check-ignore -q "$DEST/" || { echo "$DEST/ is not git-ignored: refusing to fill it" >&2; exit 1; }
mkdir -p "$DEST"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform any -d "$DEST" warp-lang==1.19.0 ase==3.29.0 psutil tqdm
python3 -m pip download --no-deps --no-binary=:all: -d "$DEST/sdist" torchmd-net==3.1.0
python3 -m pip wheel --no-deps -w "$DEST" "$DEST/sdist/torchmd_net-3.1.0.tar.gz"
rm -rf "$DEST"/carry* "$DEST/pieces"
# drop the CPU JIT library (and its RECORD line) from the warp wheel, in place
python3 - "$DEST/$WARP" <<'PY'
import os, sys, zipfile
path = sys.argv[1]
drop = "warp/bin/warp-clang.so"
with zipfile.ZipFile(path) as src:
    names = src.namelist()
    if drop in names:
        with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as out:
            for info in src.infolist():
                if info.filename == drop:
                    continue
                data = src.read(info.filename)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(drop.encode() + b","))
                # LZMA for the native library (pip reads it: zipfile decompresses LZMA), deflate else
                big = info.filename.endswith(".so")
                out.writestr(info, data, zipfile.ZIP_LZMA if big else zipfile.ZIP_DEFLATED)
        os.replace(path + ".tmp", path)
PY
PIECE=${PIECE:-$(( ($(stat -c %s "$DEST/$WARP") + 2 * 1048576 - 1) / (2 * 1048576) ))M}

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
[ "$n" -eq 2 ] || { echo "expected 2 warp pieces, got $n: set PIECE" >&2; exit 1; }
cp "$DEST"/ase-3.29.0-py3-none-any.whl "$DEST"/psutil-*.whl "$DEST"/tqdm-*.whl "$DEST/carry1/"
cp "$DEST"/torchmd_net-3.1.0-*.whl "$DEST/carry2/"

tree_mib=$(git ls-files -z | du -ch --files0-from=- -B1M 2>/dev/null | tail -1 | cut -f1)
echo
echo "tracked working tree: ~${tree_mib} MiB (+ untracked files); each call carries at most 64 MiB in all"
du -sh "$DEST"/carry*
echo
echo "device calls: the two in bench/gpu_run.sh's header (carry .whl/carry1, then .whl/carry2),"
echo "back to back: the machine keeps /tmp/w only while it stays warm, ~30 s after a call"
