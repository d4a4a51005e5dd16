#!/usr/bin/env bash
# Make sure the real peers the suite talks to are installed and running:
# DCMTK, Orthanc (+ DICOMweb plugin), dicom3tools (dciodvfy), Chromium, Redis, PostgreSQL,
# openssl (the TLS tests make their own certificate authority), rsyslog with its OpenSSL
# driver (the audit trail's syslog collector, started per test module), Node.js and the
# npm package oidc-provider (the OpenID Connect provider of the sign-in tests, tests/oidc).
# Orthanc itself is started per test by the fixtures; this script only installs it.
set -euo pipefail

need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v openssl >/dev/null || need+=(openssl)  # the TLS tests make their own CA
{ command -v rsyslogd || [ -x /usr/sbin/rsyslogd ]; } >/dev/null || need+=(rsyslog)  # audit syslog
ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1 || need+=(rsyslog-openssl)  # its TLS
command -v node >/dev/null || need+=(nodejs)  # the OpenID provider of the tests
command -v npm >/dev/null || need+=(npm)
command -v docker-compose >/dev/null || need+=(docker-compose)  # checks deploy/docker-compose.yml

if [ ${#need[@]} -gt 0 ]; then
    echo "installing peers: ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# The OpenID provider's package, exactly as tests/oidc/package-lock.json pins it.
oidc_dir="$(dirname "$0")/oidc"
if [ ! -d "$oidc_dir/node_modules/oidc-provider" ]; then
    echo "installing the test OpenID provider (npm ci in tests/oidc)"
    (cd "$oidc_dir" && npm ci --no-audit --no-fund)
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
echo "peers ready"
