#!/usr/bin/env bash
# Creates (or reuses) the virtualenv the peer benchmark scripts run in and installs
# bench/peers/requirements.txt into it from PyPI.
#
#   bench/peers/setup.sh [VENV]     (default: target/bench-venv under the repository)
#
# Prints the venv's python on the last line. Reuses an existing venv when it already has
# exactly the pinned versions, so repeated bench runs do not touch the network.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/target/bench-venv}"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

if ! "$python" -m venv --help >/dev/null 2>&1; then
  echo "setup.sh: $python has no venv module (apt-get install python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup.sh: creating $venv" >&2
  "$python" -m venv "$venv"
fi

# Installed already? Compare the pins with what the venv has.
wanted="$(grep -Ev '^\s*(#|$)' "$req" | tr 'A-Z_' 'a-z-' | sort)"
have="$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort)"
missing="$(comm -23 <(echo "$wanted") <(echo "$have"))"
if [ -n "$missing" ]; then
  echo "setup.sh: installing $(echo $missing) into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
fi
"$venv/bin/python" -c 'import asyncssh, netmiko, nats' >&2
echo "$venv/bin/python"
