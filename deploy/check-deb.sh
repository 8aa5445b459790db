#!/usr/bin/env bash
# Builds the Debian package (deploy/build-deb.sh) and checks it without touching this machine's
# system: contents and control fields, `dpkg -x` into a scratch folder, the packaged binary with
# the packaged ONNX Runtime and bundle generating a report, `dpkg --root` install (maintainer
# scripts included: the `meit` user lands in the scratch root's /etc/passwd) and purge, and
# `systemd-analyze verify` of the installed unit. The arm64 package too when the aarch64 binary
# exists (cross/build-aarch64.sh), run under qemu-aarch64 when that is installed.
# CI runs it after `make test`. Exits non-zero at the first failed check.
#
#   deploy/check-deb.sh [--binary PATH]    # default: target/release/meit, else target/debug/meit
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "check-deb: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$binary" ]]; then
  for b in "$root/target/release/meit" "$root/target/debug/meit"; do
    [[ -x "$b" ]] && { binary=$b; break; }
  done
fi
[[ -n "$binary" ]] || { echo "check-deb: no meit binary: cargo build --bin meit first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }
ok() { echo "check-deb: ok: $*"; }

# Paths every package must hold (relative to /).
expected=(
  usr/bin/meit
  usr/lib/meit/libonnxruntime.so
  usr/share/meit/bundles/tiny/manifest.json
  usr/share/meit/bundles/tiny/encoder.onnx
  usr/share/meit/bundles/tiny/decoder.onnx
  usr/share/meit/bundles/tiny/tokenizer.json
  etc/meit/meit.toml
  etc/meit/meit.env
  usr/lib/systemd/system/meit.service
  usr/lib/sysusers.d/meit.conf
  usr/share/doc/meit/copyright
  usr/share/doc/meit/onnxruntime/LICENSE
  usr/share/doc/meit/jetson.md
  usr/share/doc/meit/x86-gateway.md
)

# Checks one built package: control fields, listed contents, and an unpacked copy.
check_contents() {
  local deb=$1 arch=$2 dest=$3
  [[ "$(dpkg-deb -f "$deb" Package)" == meit ]] || fail "$deb: Package is not meit"
  [[ "$(dpkg-deb -f "$deb" Architecture)" == "$arch" ]] || fail "$deb: Architecture is not $arch"
  dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>= 2\.' || fail "$deb: no libc6 minimum in Depends"
  local glibc
  glibc=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
  # JetPack 6 (Ubuntu 22.04) has glibc 2.35; Debian 12 2.36.
  [[ "$(printf '%s\n2.35\n' "$glibc" | sort -V | tail -1)" == 2.35 ]] ||
    fail "$deb: needs glibc $glibc, newer than JetPack 6's 2.35"
  [[ "$(dpkg-deb -I "$deb" conffiles)" == $'/etc/meit/meit.toml\n/etc/meit/meit.env' ]] ||
    fail "$deb: conffiles are not /etc/meit/meit.toml and /etc/meit/meit.env"
  dpkg-deb -x "$deb" "$dest"
  for p in "${expected[@]}"; do
    # -e follows links: the libonnxruntime.so link must point at the packaged library.
    [[ -e "$dest/$p" ]] || fail "$deb: $p missing"
  done
  [[ "$(stat -c %a "$dest/etc/meit/meit.env")" == 600 ]] || fail "$deb: /etc/meit/meit.env is not 0600"
  # The configuration names the packaged runtime and bundle.
  grep -q '^onnxruntime = "/usr/lib/meit/libonnxruntime.so"' "$dest/etc/meit/meit.toml" ||
    fail "$deb: meit.toml does not name /usr/lib/meit/libonnxruntime.so"
  grep -q '^bundle = "/usr/share/meit/bundles/tiny"' "$dest/etc/meit/meit.toml" ||
    fail "$deb: meit.toml does not name /usr/share/meit/bundles/tiny"
  grep -q "^ExecStart=/usr/bin/meit run --config /etc/meit/meit.toml" "$dest/usr/lib/systemd/system/meit.service" ||
    fail "$deb: the unit does not run /usr/bin/meit with /etc/meit/meit.toml"
  local doc
  for doc in $(sed -n 's/^Documentation=//p' "$dest/usr/lib/systemd/system/meit.service"); do
    [[ -e "$dest/${doc#file:///}" ]] || fail "$deb: the unit's Documentation $doc is not in the package"
  done
  ok "$(basename "$deb"): control fields, conffiles, $(dpkg-deb -c "$deb" | wc -l) entries, libc6 >= $glibc"
}

# Runs the unpacked package's own binary, runtime and bundle: the packaged configuration must
# pass check-config, and a synthesized record must get a generated report. The arguments after
# the architecture and folder are the command prefix (none, or cross/qemu-aarch64.sh).
check_runs() {
  local arch=$1 dest=$2; shift 2
  local run=("$@")
  "${run[@]}" "$dest/usr/bin/meit" check-config "$dest/etc/meit/meit.toml" >/dev/null 2>&1 ||
    fail "the packaged meit.toml does not pass the packaged meit's check-config"
  sed -e "s|\"/usr/|\"$dest/usr/|" -e 's|^required = false|required = true|' \
    "$dest/etc/meit/meit.toml" > "$work/installed.toml"
  "${run[@]}" "$dest/usr/bin/meit" synth --condition normal --seconds 10 --seed 3 --wfdb "$work/rec" >/dev/null 2>&1
  local out
  out=$("${run[@]}" "$dest/usr/bin/meit" replay --fast --config "$work/installed.toml" --output json "$work/rec.hea" 2>"$work/replay.err") ||
    { cat "$work/replay.err" >&2; fail "the packaged meit could not replay with the packaged runtime and bundle"; }
  python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
kinds = [r["outcome"]["kind"] for r in rows]
if not rows or kinds != ["report"] * len(rows):
    sys.exit(f"expected generated reports, got {kinds}")
print(rows[0]["outcome"]["text"])
' <<<"$out" > "$work/text" || fail "packaged replay: $(cat "$work/text")"
  ok "$arch: packaged binary + ONNX Runtime + bundle: check-config passes, replay reports \"$(cat "$work/text")\""
}

# --- amd64 (this machine) ---------------------------------------------------------------------
[[ "$(uname -m)" == x86_64 ]] || fail "run on x86_64 (the arm64 package is checked from there)"
deb=$("$root/deploy/build-deb.sh" --arch amd64 --binary "$binary" --fast --out "$work/deb" | tail -1)
check_contents "$deb" amd64 "$work/x"
check_runs amd64 "$work/x"

# dpkg --root: a scratch root with dpkg's database; maintainer scripts run outside a chroot
# with DPKG_ROOT set, and ours touch nothing outside it. Dependencies (libc6 ...) are not in
# the scratch root, hence --force-depends.
scratch="$work/root"
mkdir -p "$scratch/var/lib/dpkg/info" "$scratch/var/lib/dpkg/updates" "$scratch/var/lib/dpkg/triggers" "$scratch/etc"
touch "$scratch/var/lib/dpkg/status"
host_passwd=$(sha256sum /etc/passwd)
dpkg_root=(dpkg --root="$scratch" --force-script-chrootless --force-depends --force-not-root)
"${dpkg_root[@]}" -i "$deb" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --root -i"; }
[[ "$(sha256sum /etc/passwd)" == "$host_passwd" ]] || fail "installing into the scratch root changed this machine's /etc/passwd"
"${dpkg_root[@]}" -s meit | grep -q '^Status: install ok installed' || fail "dpkg --root: meit not installed"
if command -v systemd-sysusers >/dev/null; then
  grep -q '^meit:x:[0-9]*:[0-9]*:.*:/var/lib/meit:/usr/sbin/nologin$' "$scratch/etc/passwd" ||
    fail "postinst did not create the meit system user in the scratch root"
  ok "dpkg --root install: status installed, postinst created user meit (in the scratch root only)"
else
  echo "SKIPPED: check-deb user creation: systemd-sysusers is not installed (postinst uses useradd on a real system)"
fi

if command -v systemd-analyze >/dev/null; then
  # The scratch root gets what a systemd machine has: the units the meit unit hangs off, and kill.
  mkdir -p "$scratch/usr/bin"
  [[ -e "$scratch/bin" ]] || ln -s usr/bin "$scratch/bin"
  cp "$(type -P kill)" "$scratch/usr/bin/kill"
  cp -an /usr/lib/systemd/system/. "$scratch/usr/lib/systemd/system/"
  unit=/usr/lib/systemd/system/meit.service
  # A misspelt key must be reported: the check can fail.
  sed 's/^ProtectHome=/ProtectHomme=/' "$scratch$unit" > "$scratch/usr/lib/systemd/system/meit-misspelt.service"
  systemd-analyze verify --root="$scratch" /usr/lib/systemd/system/meit-misspelt.service 2>&1 | grep -q "Unknown key" ||
    fail "systemd-analyze verify did not report a misspelt key"
  rm "$scratch/usr/lib/systemd/system/meit-misspelt.service"
  # verify exits 0 on unknown keys and bad values (it warns): any output is a failure.
  verify=$(systemd-analyze verify --root="$scratch" "$unit" 2>&1) && [[ -z "$verify" ]] ||
    fail "systemd-analyze verify meit.service: $verify"
  exposure=$(systemd-analyze security --offline=true --root="$scratch" "$unit" 2>&1 | sed -n 's/.*Overall exposure level for meit.service: //p')
  ok "systemd-analyze verify meit.service: clean; security exposure (offline): $exposure"
else
  echo "SKIPPED: check-deb systemd-analyze verify: systemd-analyze is not installed (Debian package systemd)"
fi

"${dpkg_root[@]}" -P meit > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --root -P"; }
for p in usr/bin/meit etc/meit/meit.toml usr/share/meit/bundles/tiny/manifest.json usr/lib/systemd/system/meit.service; do
  [[ ! -e "$scratch/$p" ]] || fail "purge left /$p"
done
ok "dpkg --root purge: files and conffiles removed"

# --- arm64 (when the cross build exists) ------------------------------------------------------
arm_bin="$root/target/aarch64-unknown-linux-gnu/release/meit"
if [[ -x "$arm_bin" ]] && command -v aarch64-linux-gnu-strip >/dev/null; then
  deb=$("$root/deploy/build-deb.sh" --arch arm64 --binary "$arm_bin" --fast --out "$work/deb" | tail -1)
  check_contents "$deb" arm64 "$work/a"
  readelf -h "$work/a/usr/bin/meit" | grep -q 'Machine:.*AArch64' || fail "arm64 package: /usr/bin/meit is not AArch64"
  if command -v qemu-aarch64 >/dev/null && [[ -d /usr/aarch64-linux-gnu/lib ]]; then
    check_runs arm64 "$work/a" "$root/cross/qemu-aarch64.sh"
  else
    echo "SKIPPED: check-deb arm64 run: qemu-aarch64 or the arm64 libc (qemu-user, libc6-arm64-cross) is not installed"
  fi
else
  echo "SKIPPED: check-deb arm64 package: no aarch64 build (cross/build-aarch64.sh makes $arm_bin)"
fi
echo "check-deb: all checks passed"
