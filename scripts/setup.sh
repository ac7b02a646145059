#!/usr/bin/env bash
# Install what the project needs: system packages (Java, ZooKeeper) when missing, then
# .venv with the project and its test tools. Idempotent; quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
# the cluster tests (tests/cluster) make network namespaces with ip
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
[ -f /usr/share/java/zookeeper.jar ] || [ -n "${ZOOKEEPER_HOME:-}" ] || need_apt+=(zookeeper)
# the syslog tests drive real senders and a real receiver: rsyslog and util-linux logger
# (the tests start their own unprivileged instance, never the system's)
[ -x /usr/sbin/rsyslogd ] || command -v rsyslogd >/dev/null 2>&1 || need_apt+=(rsyslog)
command -v logger >/dev/null 2>&1 || need_apt+=(bsdutils)
# a real rsyslog forwards over TLS (RFC 5425) in tests/node/test_tls_rsyslog.py
compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null || need_apt+=(rsyslog-gnutls)
# a real Prometheus scrapes a master and two nodes, and promtool checks every /metrics
# (tests/integration/test_prometheus_scrape.py); the tests run their own instance
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
  || need_apt+=(prometheus)
# the web console's tests run in a real headless browser
if [ "${FLUME_SETUP_BROWSER:-1}" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (Debian: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# pip reaches the package index even when everything is installed (the editable build's
# own environment): skip it while pyproject.toml is the one last installed (the code itself
# is installed editable, so a change of code needs no install)
stamp=.venv/.installed-pyproject
if ! cmp -s pyproject.toml "$stamp"; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  bash scripts/pip-install-editable.sh .venv/bin/python '.[test]'
  cp pyproject.toml "$stamp"
fi
