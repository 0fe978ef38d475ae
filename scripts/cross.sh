#!/usr/bin/env bash
# make cross: build tori-run for Windows and macOS, then, when wine64 is
# installed, run the Windows build's `capsbuild --from-zip` on a zip made as
# Windows tools make them (no Unix modes) and check that its archive is
# byte-identical (same SHA-256, same release digest) to the Linux build's
# from the same zip and manifest, and that its `spec` prints the same
# config.json as the Linux build's `spec --assume-host` (the facts spec
# assumes off Linux: runtime/plan.AssumedFacts).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=bin/cross
mkdir -p "$out"
for target in windows/amd64 darwin/amd64 darwin/arm64; do
	os=${target%/*} arch=${target#*/}
	ext=""; [ "$os" = windows ] && ext=.exe
	echo "cross: $target"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch $GO build -trimpath -o "$out/tori-run-$os-$arch$ext" ./cmd/tori-run
done

wine=$(command -v wine64 || true)
[ -z "$wine" ] && [ -x /usr/lib/wine/wine64 ] && wine=/usr/lib/wine/wine64
if [ -z "$wine" ]; then
	echo "cross: wine64 is not installed (apt-get install wine64): not checking the Windows build's archive" >&2
	exit 0
fi
for tool in x86_64-w64-mingw32-as x86_64-w64-mingw32-ld; do
	command -v $tool >/dev/null || { echo "cross: $tool missing (apt-get install binutils-mingw-w64-x86-64 mingw-w64-x86-64-dev)" >&2; exit 1; }
done

work=$(mktemp -d)
cleanup() {
	# wineserver of this prefix only; then the prefix itself.
	WINEPREFIX="$work/prefix" wineserver -k 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
export WINEDEBUG=-all WINEPREFIX="$work/prefix" WINEDLLOVERRIDES="mscoree,mshtml="
# Headless: no display is needed for a console program.
unset DISPLAY
"$wine" wineboot --init >/dev/null 2>&1 || true
x86_64-w64-mingw32-as -o "$work/shim.o" scripts/wine/bcryptprimitives.s
x86_64-w64-mingw32-ld -shared --entry DllMain -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
	"$work/shim.o" -L/usr/x86_64-w64-mingw32/lib -ladvapi32

# The seed's app as a Windows tool zips it, and the seed's manifest.
python3 - "$work/app.zip" <<'PY'
import sys, zipfile
base = "examples/metacog/"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name in ["python/", "python/core/"]:
        zi = zipfile.ZipInfo(name, (2025, 3, 1, 12, 0, 0)); zi.create_system = 0; zi.external_attr = 0x10
        z.writestr(zi, b"")
    for name in ["python/core/start_true_metacognition.py", "python/core/tori_state.py", "requirements_nodb.txt"]:
        zi = zipfile.ZipInfo(name, (2025, 3, 1, 12, 0, 0)); zi.create_system = 0; zi.external_attr = 0x20
        zi.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(zi, open(base + name, "rb").read())
PY
cp specs/testdata/good/seed-capsule.yml "$work/capsule.yml"
cp "$out/tori-run-windows-amd64.exe" "$work/capsbuild.exe"
$GO build -trimpath -o "$work/tori-run" ./cmd/tori-run

(cd "$work" && "$wine" ./capsbuild.exe --from-zip app.zip --manifest capsule.yml --output windows.tar.gz) >"$work/windows.log" 2>&1 ||
	{ cat "$work/windows.log" >&2; echo "cross: the Windows build's capsbuild failed under wine64" >&2; exit 1; }
(cd "$work" && ./tori-run build --from-zip app.zip --manifest capsule.yml --output linux.tar.gz) >"$work/linux.log"
win=$(sha256sum <"$work/windows.tar.gz" | cut -d' ' -f1)
lin=$(sha256sum <"$work/linux.tar.gz" | cut -d' ' -f1)
digest=$(grep -o 'digest  [0-9a-f]*' "$work/linux.log" | cut -d' ' -f3)
if [ "$win" != "$lin" ] || ! grep -q "$digest" "$work/windows.log"; then
	echo "cross: the Windows build made another archive: windows $win, linux $lin" >&2
	cat "$work/windows.log" "$work/linux.log" >&2
	exit 1
fi
# validate works there too; running a capsule says it needs Linux.
cp "$work/capsbuild.exe" "$work/tori-run.exe"
(cd "$work" && "$wine" ./tori-run.exe validate --manifest capsule.yml app.zip) >"$work/validate.log" 2>&1 ||
	{ cat "$work/validate.log" >&2; echo "cross: validate failed under wine64" >&2; exit 1; }
if (cd "$work" && "$wine" ./tori-run.exe run x) >"$work/run.log" 2>&1 || ! grep -q "needs Linux" "$work/run.log"; then
	cat "$work/run.log" >&2; echo "cross: tori-run run on Windows should say it needs Linux" >&2; exit 1
fi
# spec: the same config.json from the same assumed host facts. The
# Windows build assumes them (no host to probe); Linux is told to.
mkdir -p "$work/metacog"
cp -r examples/metacog/. "$work/metacog/"
(cd "$work" && "$wine" ./tori-run.exe spec metacog/capsule.yml) >"$work/windows-spec.json" 2>"$work/windows-spec.log" ||
	{ cat "$work/windows-spec.log" >&2; echo "cross: spec failed under wine64" >&2; exit 1; }
grep -q "no host probed; assumed: cgroup v2" "$work/windows-spec.log" ||
	{ cat "$work/windows-spec.log" >&2; echo "cross: the Windows build's spec does not say which host facts it assumed" >&2; exit 1; }
(cd "$work" && ./tori-run spec --assume-host metacog/capsule.yml) >"$work/linux-spec.json" 2>/dev/null
# Wine's console may end lines with CRLF.
tr -d '\r' <"$work/windows-spec.json" >"$work/windows-spec.lf.json"
if ! cmp -s "$work/windows-spec.lf.json" "$work/linux-spec.json" || [ ! -s "$work/linux-spec.json" ]; then
	echo "cross: the Windows build's spec differs from Linux's with the same assumed facts:" >&2
	diff "$work/linux-spec.json" "$work/windows-spec.lf.json" | head -40 >&2
	exit 1
fi
if ! cmp -s "$work/linux-spec.json" runtime/plan/testdata/metacog-config.json; then
	echo "cross: spec --assume-host differs from runtime/plan/testdata/metacog-config.json (the plan's golden file)" >&2
	diff runtime/plan/testdata/metacog-config.json "$work/linux-spec.json" | head -40 >&2
	exit 1
fi
spec=$(sha256sum <"$work/linux-spec.json" | cut -d' ' -f1)
echo "cross: Windows build under wine64 made the same archive as Linux: sha256 $win, release $digest"
echo "cross: and printed the same config.json as Linux's spec --assume-host: sha256 $spec"
