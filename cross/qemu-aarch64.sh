#!/usr/bin/env bash
# Runs an aarch64 Linux program under qemu-aarch64 (Debian qemu-user) as an emulated Cortex-A76
# (ARMv8.2-A like the Jetson Orin's Cortex-A78AE; no SVE), with the arm64 libraries from
# /usr/aarch64-linux-gnu (libc6-arm64-cross, libstdc++6-arm64-cross).
#
#   cross/qemu-aarch64.sh target/aarch64-unknown-linux-gnu/release/meit doctor
#
# Why a wrapper: Debian 12's qemu 7.2 shows the program the host's /proc/cpuinfo (x86 text).
# ONNX Runtime's cpuinfo library finds no ARM core in it and dies of SIGSEGV (a NULL read) while
# initialising, before any model is opened. So the program runs in a private mount namespace
# whose /proc/cpuinfo describes the emulated core, one entry per CPU the kernel lists (the
# topology in /sys is the host's, and cpuinfo reads both). Needs root, or user namespaces.
set -euo pipefail

if [[ "${MEIT_QEMU_PRIVATE_NS:-}" != 1 ]]; then
  command -v qemu-aarch64 >/dev/null || { echo "qemu-aarch64.sh: qemu-aarch64 is missing (Debian qemu-user)" >&2; exit 127; }
  ns=(unshare --mount --propagation private)
  [[ $(id -u) -eq 0 ]] || ns+=(--map-root-user)
  MEIT_QEMU_PRIVATE_NS=1 exec "${ns[@]}" "$0" "$@"
fi

fake=$(mktemp)
for ((cpu = 0; cpu < $(getconf _NPROCESSORS_CONF); cpu++)); do
  # Cortex-A76 r4p1: what qemu's `-cpu cortex-a76` reports in MIDR_EL1.
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$cpu"
done > "$fake"
mount --bind "$fake" /proc/cpuinfo || { rm -f "$fake"; echo "qemu-aarch64.sh: cannot bind-mount over /proc/cpuinfo (needs root or user namespaces)" >&2; exit 1; }
rm -f "$fake"   # the bind mount keeps the file's contents
unset MEIT_QEMU_PRIVATE_NS
exec qemu-aarch64 -cpu cortex-a76 -L /usr/aarch64-linux-gnu "$@"
