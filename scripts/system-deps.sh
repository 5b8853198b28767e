#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when running as root and they are missing.
# Everything else (SeaweedFS, Python packages) comes from PyPI into the virtualenv.
set -euo pipefail

need=()
command -v psql >/dev/null 2>&1 && [ -x /usr/lib/postgresql/*/bin/initdb ] || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# A real FUSE file system for the local port's tests (bindfs brings fusermount).
command -v bindfs >/dev/null 2>&1 || need+=(bindfs)
# A disk that fails writes, for real (loop device + ext4: tests/conftest.py failing_disk).
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
# Benchmark-only peers (make bench sets BENCH=1).
if [ -n "${BENCH:-}" ]; then
  command -v rclone >/dev/null 2>&1 || need+=(rclone)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]} (not root: install them yourself)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
