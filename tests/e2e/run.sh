#!/usr/bin/env bash
# make e2e: stage the freshly built artifacts, boot the emulated test host,
# run the suite there, and always end QEMU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
share=$top/build/share
bash "$here/stage.sh" "$share"
trap 'bash "$here/testhost" down' EXIT
timeout 1500 bash "$here/testhost" up "$share"
timeout 1800 bash "$here/testhost" run "E2E_ONLY='${E2E_ONLY:-}' bash /mnt/share/e2e/suite.sh"
