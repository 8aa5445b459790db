#!/usr/bin/env bash
# Builds the Debian package `meit_<version>_<arch>.deb` with `dpkg-deb --build` (no cargo-deb):
#
#   /usr/bin/meit                          the daemon (stripped)
#   /usr/lib/meit/libonnxruntime.so*       the CPU build of ONNX Runtime (scripts/fetch-onnxruntime.sh)
#   /usr/share/meit/bundles/tiny/          the default model bundle (models/bundles/tiny, int4)
#   /etc/meit/meit.toml, /etc/meit/meit.env   configuration and MQTT credentials (conffiles)
#   /usr/lib/systemd/system/meit.service   the unit (deploy/meit.service)
#   /usr/lib/sysusers.d/meit.conf          the `meit` system user (created by postinst)
#   /usr/share/doc/meit/                   copyright, deployment guides, example configurations
#   state: /var/lib/meit (outbox, TensorRT engine cache), made by systemd (StateDirectory=)
#
#   deploy/build-deb.sh                               # this machine's architecture, target/release/meit
#   deploy/build-deb.sh --arch arm64                  # target/aarch64-unknown-linux-gnu/release/meit
#   deploy/build-deb.sh --binary target/debug/meit --fast   # any build of meit; gzip -1 instead of xz
#
# The binary is not built here (`make build`, cross/build-aarch64.sh). Prints the .deb's path last.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=unknown ;; esac
binary=""
out="$root/target/deb"
compress=(-Zxz)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) arch=${2:?--arch needs amd64 or arm64}; shift ;;
    --binary) binary=${2:?--binary needs a path}; shift ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --fast) compress=(-Zgzip -z1) ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-deb: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
case "$arch" in
  amd64) ort_arch=x86_64; rust_target_dir="$root/target/release"; tool_prefix="" ;;
  arm64) ort_arch=aarch64; rust_target_dir="$root/target/aarch64-unknown-linux-gnu/release"; tool_prefix="aarch64-linux-gnu-" ;;
  *) echo "build-deb: unsupported architecture '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac
binary=${binary:-$rust_target_dir/meit}
[[ -x "$binary" ]] || { echo "build-deb: no meit binary at $binary (build it first: make build, or cross/build-aarch64.sh)" >&2; exit 1; }
for tool in "${tool_prefix}strip" "${tool_prefix}objdump" dpkg-deb fakeroot; do
  command -v "$tool" >/dev/null || { echo "build-deb: '$tool' is missing (binutils${tool_prefix:+-aarch64-linux-gnu}, dpkg-dev, fakeroot)" >&2; exit 1; }
done

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["workspace"]["package"]["version"])' "$root/Cargo.toml")
"$root/scripts/fetch-onnxruntime.sh" "$ort_arch" >/dev/null
ort_version=$(sed -n 's/^VERSION=//p' "$root/scripts/fetch-onnxruntime.sh")
ort_lib="$root/.onnxruntime/$ort_arch/libonnxruntime.so.$ort_version"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/meit"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/meit" "$pkg/usr/share/meit/bundles" \
  "$pkg/etc/meit" "$pkg/usr/lib/systemd/system" "$pkg/usr/lib/sysusers.d" \
  "$pkg/usr/share/doc/meit/examples" "$pkg/usr/share/doc/meit/onnxruntime"

"${tool_prefix}strip" -o "$pkg/usr/bin/meit" "$binary"
chmod 0755 "$pkg/usr/bin/meit"
install -m 0644 "$ort_lib" "$pkg/usr/lib/meit/"
ln -s "libonnxruntime.so.$ort_version" "$pkg/usr/lib/meit/libonnxruntime.so"
cp -r "$root/models/bundles/tiny" "$pkg/usr/share/meit/bundles/tiny"
find "$pkg/usr/share/meit" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
install -m 0644 "$root/deploy/meit.toml" "$pkg/etc/meit/meit.toml"
install -m 0600 "$root/deploy/meit.env" "$pkg/etc/meit/meit.env"
install -m 0644 "$root/deploy/meit.service" "$pkg/usr/lib/systemd/system/meit.service"
install -m 0644 "$root/deploy/meit.sysusers" "$pkg/usr/lib/sysusers.d/meit.conf"
install -m 0644 "$root/deploy/debian/copyright" "$pkg/usr/share/doc/meit/copyright"
install -m 0644 "$root/.onnxruntime/$ort_arch/LICENSE" "$root/.onnxruntime/$ort_arch/ThirdPartyNotices.txt" \
  "$pkg/usr/share/doc/meit/onnxruntime/"
install -m 0644 "$root/docs/deploy/jetson.md" "$root/docs/deploy/x86-gateway.md" "$pkg/usr/share/doc/meit/"
install -m 0644 "$root"/configs/*.toml "$pkg/usr/share/doc/meit/examples/"
install -m 0755 "$root/deploy/debian/postinst" "$root/deploy/debian/prerm" "$root/deploy/debian/postrm" "$pkg/DEBIAN/"
printf '/etc/meit/meit.toml\n/etc/meit/meit.env\n' > "$pkg/DEBIAN/conffiles"

# The newest glibc symbol version the binary and ONNX Runtime need: the package's libc6 minimum
# (a Jetson on JetPack 6 has glibc 2.35).
glibc=$("${tool_prefix}objdump" -T "$pkg/usr/bin/meit" "$pkg/usr/lib/meit/libonnxruntime.so.$ort_version" \
  | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
installed_kb=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<EOF
Package: meit
Version: $version
Architecture: $arch
Maintainer: meit maintainers <meit@example.invalid>
Installed-Size: $installed_kb
Depends: libc6 (>= $glibc), libgcc-s1, libstdc++6
Section: science
Priority: optional
Homepage: https://example.invalid/meit
Description: bedside ECG report generation on edge hardware
 meit reads live ECG from serial or BLE acquisition hardware, filters and windows it, generates a
 report per window with an ECG encoder and a 4-bit language model on ONNX Runtime, and publishes
 it over MQTT. Not a certified medical device: its reports are decision support for clinicians.
 Includes the CPU build of ONNX Runtime $ort_version and the default model bundle.
EOF
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/meit_${version}_${arch}.deb"
fakeroot dpkg-deb "${compress[@]}" --build "$pkg" "$deb" >/dev/null
echo "build-deb: $(basename "$deb"): $(stat -c %s "$deb") bytes, installed ${installed_kb} KiB, libc6 >= $glibc"
echo "$deb"
