#!/usr/bin/env bash
# What the test suite needs beyond the venv, installed here so that `make test` alone works
# on a fresh machine (and .ci/run only calls it). Each tool is checked first: nothing is
# installed twice. Where it cannot be installed (no root, no apt-get), stop at once with
# one line saying what to install — never a failure halfway through the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Wazuh alerts that the conformance and verdict tests read: beside the checkout, never
# in it (their licence: ../shared/data/wazuh-alerts/SOURCES.md says where they come from).
if [[ ! -f ../shared/data/wazuh-alerts/alerts.jsonl ]]; then
  echo "make test needs ../shared/data/wazuh-alerts/alerts.jsonl beside the checkout (real Wazuh alerts: tests/conformance, the verdict tests)" >&2
  exit 1
fi

# command → Debian package, and the tests that need it
declare -A PACKAGES=(
  [redis-server]=redis-server   # the quota store's Redis test (tests/integration/test_quota_redis.py)
  [kubectl]=kubectl             # renders the Kubernetes overlays (ships kustomize)
  [promtool]=prometheus         # checks and unit-tests the alert rules
  [prometheus]=prometheus       # the real Prometheus of tests/integration/test_prometheus_autoscaling.py
  [chromium]=chromium           # the console's browser tests (tests/e2e), driven by playwright
  [npm]=npm                     # the real OpenID provider of the OIDC tests (tests/oidc)
)
missing=()
for command in "${!PACKAGES[@]}"; do
  command -v "$command" >/dev/null || missing+=("${PACKAGES[$command]}")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)  # promtool + prometheus: one
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "make test needs: ${missing[*]} (Debian packages; install them, e.g. sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (apt-get)"
  # The packages' services (prometheus, redis-server) must not start: the tests run their
  # own instances on free ports. policy-rc.d answering 101 tells invoke-rc.d "not now".
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The OIDC provider's node modules, from its lock file, only when the lock file changed.
if [[ ! -f tests/oidc/node_modules/.package-lock.json \
      || tests/oidc/package-lock.json -nt tests/oidc/node_modules/.package-lock.json ]]; then
  (cd tests/oidc && npm ci --no-audit --no-fund --silent)
fi
