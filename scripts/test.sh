#!/usr/bin/env bash
# The one test command: installs what the tests need (a local Python venv with the AWS and
# Stripe emulators and an SMTP server) when it is missing, then runs every test of the workspace.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p domain  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${BACKBONE_VENV:-$PWD/.venv}"
PY_REQS=("moto[server]==5.2.5" "localstack-localstripe" "cfn-lint" "aiosmtpd" "selenium==4.51.0" "schemathesis==4.32.5")

if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/cfn-lint" ] || [ ! -x "$VENV/bin/localstripe" ] || [ ! -x "$VENV/bin/aiosmtpd" ] \
  || [ ! -x "$VENV/bin/st" ] \
  || ! "$VENV/bin/python" -c "import selenium" 2>/dev/null; then
  echo "==> installing test emulators into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQS[@]}"
fi
# The console's browser test (api/tests/console.rs): headless Chromium and its WebDriver.
if [ ! -x /usr/bin/chromedriver ]; then
  echo "==> installing chromium and chromium-driver"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export PATH="$VENV/bin:$PATH"
export BACKBONE_VENV="$VENV"

echo "==> cargo test"
cargo test --workspace --no-fail-fast "$@"
