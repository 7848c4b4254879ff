#!/usr/bin/env bash
# Makes a Vulkan adapter available for the `wgpu` training tests on machines without a GPU:
# Mesa's lavapipe, a Vulkan driver that runs on the CPU (Debian/Ubuntu: mesa-vulkan-drivers).
# Idempotent: does nothing when a Vulkan loader and lavapipe are already installed. A machine
# with a GPU and its vendor's Vulkan driver needs none of this.
set -euo pipefail
have() { ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 && ldconfig -p | grep -q 'libvulkan\.so\.1'; }
if have; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    mesa-vulkan-drivers libvulkan1 >/dev/null
fi
have || {
  echo "error: no Vulkan software adapter; install Mesa's lavapipe (apt-get install mesa-vulkan-drivers libvulkan1)" >&2
  exit 1
}
