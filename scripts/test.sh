#!/usr/bin/env bash
# The one test command: installs what the tests need (a local Python venv with the AWS and
# Stripe emulators and an SMTP server) when it is missing, then runs every test of the workspace.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p domain  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${BACKBONE_VENV:-$PWD/.venv}"
PY_REQS=("moto[server]==5.2.5" "localstack-localstripe" "cfn-lint" "aiosmtpd")

if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/cfn-lint" ] || [ ! -x "$VENV/bin/localstripe" ] || [ ! -x "$VENV/bin/aiosmtpd" ]; then
  echo "==> installing test emulators into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQS[@]}"
fi
export PATH="$VENV/bin:$PATH"
export BACKBONE_VENV="$VENV"

echo "==> cargo test"
cargo test --workspace --no-fail-fast "$@"
