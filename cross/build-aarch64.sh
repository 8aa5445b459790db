#!/usr/bin/env bash
# Builds the daemon `meit` for aarch64-unknown-linux-gnu (NVIDIA Jetson, JetPack 6) on an x86-64
# Debian/Ubuntu machine, without a container engine. Installs what it needs, only when missing:
# the rustup target, and Debian's cross linker (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross;
# through scripts/install-system-deps.sh). Only the `meit` binary: not meit-models (candle).
#
#   cross/build-aarch64.sh                   # release build -> target/aarch64-unknown-linux-gnu/release/meit
#   cross/build-aarch64.sh --check           # `cargo check` only (what CI runs)
#   cross/build-aarch64.sh --features ble    # + BLE: needs the arm64 D-Bus library, see cross/README.md
#
# Default features need no aarch64 C library: serialport is built without `libudev` (root
# Cargo.toml), BLE is off. The one C build in the tree is `ring` (rustls' crypto), compiled by
# the cross gcc from its own sources.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=aarch64-unknown-linux-gnu
mode=build
features=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) mode=check ;;
    --features) features=${2:?--features needs a list}; shift ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-aarch64: unknown argument '$1' (--check, --features LIST)" >&2; exit 2 ;;
  esac
  shift
done

# The target for the toolchain pinned in rust-toolchain.toml (rustup runs from $root).
cd "$root"
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
"$root/scripts/install-system-deps.sh" gcc-aarch64-linux-gnu libc6-dev-arm64-cross

if [[ ",$features," == *",ble,"* ]]; then
  # btleplug links libdbus-1 through pkg-config: the arm64 development package must be there.
  if ! dpkg-query -W -f='${Status}' libdbus-1-dev:arm64 2>/dev/null | grep -q "install ok installed"; then
    cat >&2 <<'EOF'
build-aarch64: the `ble` feature needs the arm64 D-Bus library, which this script does not
install (it adds a foreign architecture to dpkg). On the build machine:
  dpkg --add-architecture arm64 && apt-get update && apt-get install libdbus-1-dev:arm64
EOF
    exit 2
  fi
  export PKG_CONFIG_ALLOW_CROSS=1
  export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
fi

# ring's build script compiles C with these; the linker comes from cross/cargo-config.toml.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

args=(--config "$root/cross/cargo-config.toml" "$mode" -p meit --bin meit --target "$target"
  --no-default-features)
[[ -n "$features" ]] && args+=(--features "$features")
[[ "$mode" == build ]] && args+=(--release)

echo "build-aarch64: cargo ${args[*]}"
start=$(date +%s)
cargo "${args[@]}"
echo "build-aarch64: cargo $mode took $(( $(date +%s) - start )) s"
if [[ "$mode" == build ]]; then
  bin="$root/target/$target/release/meit"
  echo "build-aarch64: $bin ($(stat -c %s "$bin") bytes)"
fi
