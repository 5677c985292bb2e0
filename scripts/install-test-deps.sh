#!/bin/sh
# Install what the test suite needs: Dovecot (IMAP + POP3; the tests start their own private
# instance on 127.0.0.1, the system service is not used), strace (the durability tests watch
# the ledger's fsyncs at the system-call level), systemd (only `systemd-analyze`, which checks
# contrib/systemd/postmaster-bridge.service; nothing is started), curl and jq (the README's
# local try-out is run as written), postgresql (the store tests start a private server from
# its initdb and pg_ctl; libpq5 comes with it, for psycopg) and the project with its test
# extras.
# Idempotent, quiet and non-interactive: safe to run on every CI job.
set -eu

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PACKAGES="dovecot-imapd dovecot-pop3d strace systemd curl jq postgresql"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

test_packages_installed() {
    for package in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null \
            | grep -q 'install ok installed' || return 1
    done
}

if ! test_packages_installed; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $PACKAGES \
        >/dev/null
fi

PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
